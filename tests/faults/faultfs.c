// SPDX-License-Identifier: BSD-3-Clause
/*
 * faultfs: a FUSE filesystem for fault tests. It passes the files of one
 * flat directory through, and fails on demand with EIO while the file
 * named by the trigger path exists, as its contents say: 'r' reads fail,
 * 'w' writes (and fallocate) fail, 'f' fsync and fdatasync fail (a disk
 * whose cache flush fails), 'd' makes each SEEK_DATA/SEEK_HOLE take 50 ms (a
 * slow store); an empty trigger means 'f'. O_DIRECT opens pass through.
 *
 * usage: faultfs BACKDIR TRIGGER MOUNTPOINT [-f] [FUSE options]
 * (runs in the background unless -f; unmount with fusermount3 -u)
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *backdir, *trigger;

static void back_path(char *out, const char *path)
{
	snprintf(out, PATH_MAX, "%s%s", backdir, path);
}

/* Whether operation op ('r', 'w' or 'f') is to fail now. */
static bool fault(char op)
{
	char what[8] = { 0 };
	ssize_t n;
	int fd = open(trigger, O_RDONLY);

	if (fd < 0)
		return false;
	n = read(fd, what, sizeof(what) - 1);
	close(fd);
	if (n <= 0)
		return op == 'f';
	return strchr(what, op) != NULL;
}

static int ff_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	char p[PATH_MAX];

	if (fi)
		return fstat((int)fi->fh, st) < 0 ? -errno : 0;
	back_path(p, path);
	return lstat(p, st) < 0 ? -errno : 0;
}

static int ff_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	char p[PATH_MAX];
	struct dirent *de;
	DIR *d;

	(void)off;
	(void)fi;
	(void)flags;
	back_path(p, path);
	d = opendir(p);
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		fill(buf, de->d_name, NULL, 0, 0);
	closedir(d);
	return 0;
}

static int ff_open(const char *path, struct fuse_file_info *fi)
{
	char p[PATH_MAX];
	int fd;

	back_path(p, path);
	/* The backing file is used through the page cache; O_DIRECT is the client's. */
	fd = open(p, fi->flags & ~O_DIRECT);
	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int ff_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	char p[PATH_MAX];
	int fd;

	back_path(p, path);
	fd = open(p, (fi->flags & ~O_DIRECT) | O_CREAT, mode);
	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int ff_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
	ssize_t n;

	(void)path;
	if (fault('r'))
		return -EIO;
	n = pread((int)fi->fh, buf, len, off);
	return n < 0 ? -errno : (int)n;
}

static int ff_write(const char *path, const char *buf, size_t len, off_t off,
		    struct fuse_file_info *fi)
{
	ssize_t n;

	(void)path;
	if (fault('w'))
		return -EIO;
	n = pwrite((int)fi->fh, buf, len, off);
	return n < 0 ? -errno : (int)n;
}

static int ff_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	if (fault('f'))
		return -EIO;
	return (datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh)) < 0 ? -errno : 0;
}

static int ff_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	char p[PATH_MAX];

	if (fi)
		return ftruncate((int)fi->fh, size) < 0 ? -errno : 0;
	back_path(p, path);
	return truncate(p, size) < 0 ? -errno : 0;
}

static int ff_fallocate(const char *path, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	(void)path;
	if (fault('w'))
		return -EIO;
	return fallocate((int)fi->fh, mode, off, len) < 0 ? -errno : 0;
}

static off_t ff_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	off_t r;

	(void)path;
	if (fault('d'))
		usleep(50 * 1000);
	r = lseek((int)fi->fh, off, whence);
	return r < 0 ? -errno : r;
}

static int ff_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)fi->fh);
	return 0;
}

static int ff_unlink(const char *path)
{
	char p[PATH_MAX];

	back_path(p, path);
	return unlink(p) < 0 ? -errno : 0;
}

static const struct fuse_operations ops = {
	.getattr = ff_getattr,
	.readdir = ff_readdir,
	.open = ff_open,
	.create = ff_create,
	.read = ff_read,
	.write = ff_write,
	.fsync = ff_fsync,
	.truncate = ff_truncate,
	.fallocate = ff_fallocate,
	.lseek = ff_lseek,
	.release = ff_release,
	.unlink = ff_unlink,
};

int main(int argc, char **argv)
{
	static char back[PATH_MAX], trig[PATH_MAX];

	if (argc < 4) {
		fprintf(stderr, "usage: faultfs BACKDIR TRIGGER MOUNTPOINT [FUSE options]\n");
		return 2;
	}
	if (!realpath(argv[1], back)) {
		perror(argv[1]);
		return 2;
	}
	/* The trigger need not exist yet: absolute, from the directory it is in. */
	snprintf(trig, sizeof(trig), "%s%s%s", argv[2][0] == '/' ? "" : getenv("PWD"),
		 argv[2][0] == '/' ? "" : "/", argv[2]);
	backdir = back;
	trigger = trig;
	argv[2] = argv[0];
	return fuse_main(argc - 2, argv + 2, &ops, NULL);
}
