// SPDX-License-Identifier: BSD-3-Clause
/*
 * The daemon watches its own requests: a WRITE whose payload stops half way
 * is, after 10 s, named in a warning (connection, command, offset, length,
 * the state it waits in) and seen as the worker's oldest request in
 * `uringnbdctl stats`; once its payload is in and it is answered, the age
 * goes back to 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define LEN (1u << 20)

/* The largest oldest-request age over the workers, from `uringnbdctl --json stats`. */
static double oldest_s(const char *ctl)
{
	const char *bin = getenv("URINGNBDCTL");
	char cmd[4400], out[65536];
	double worst = 0;
	size_t n;
	FILE *f;

	CHECK(bin, "URINGNBDCTL is not set");
	snprintf(cmd, sizeof(cmd), "%s -c %s --json stats", bin, ctl);
	f = popen(cmd, "r");
	CHECK(f, "%s: %s", cmd, strerror(errno));
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	CHECK(pclose(f) == 0, "%s failed: %s", cmd, out);
	for (char *p = out; (p = strstr(p, "\"oldest-request-ns\":")); p++) {
		double v = strtod(p + strlen("\"oldest-request-ns\":"), NULL) / 1e9;

		if (v > worst)
			worst = v;
	}
	CHECK(strstr(out, "\"oldest-request-ns\":"), "no oldest-request-ns in: %s", out);
	return worst;
}

int main(void)
{
	static uint8_t data[LEN];
	uint8_t reply[PROTO_SIMPLE_REPLY_LEN];
	char ctl[2200];
	struct daemon d;
	double t0, age;
	int fd;

	harness_init("oldest_request", 60);
	harness_image(&d, 16u << 20);
	snprintf(ctl, sizeof(ctl), "%s/ctl", d.dir);
	harness_start(&d, "-t", "1", "--control", ctl, NULL);
	fd = raw_transmission(&d, NULL);
	harness_fill(data, sizeof(data), 5);
	raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 0x1234abcd, 8192, LEN);
	raw_send(fd, data, LEN / 2);

	t0 = harness_now();
	while (!harness_log_has(&d, "unanswered for") && harness_now() - t0 < 15)
		usleep(100000);
	CHECK(harness_log_has(&d, "unanswered for"), "no warning about the stalled WRITE");
	CHECK(harness_log_has(&d, "WRITE cookie 0x1234abcd offset 8192 length 1048576 unanswered for"),
	      "the warning does not name the request");
	CHECK(harness_log_has(&d, "receiving its payload"), "the warning does not say what it waits for");
	age = oldest_s(ctl);
	printf("warned after %.1f s; oldest request %.1f s old\n", harness_now() - t0, age);
	CHECK(age >= 9.5 && age < 20, "oldest request %.1f s old", age);

	/* The rest of the payload: answered, and nothing is old any more. */
	raw_send(fd, data + LEN / 2, LEN / 2);
	raw_recv(fd, reply, sizeof(reply));
	CHECK(proto_get_u32(reply) == NBD_SIMPLE_REPLY_MAGIC && proto_get_u32(reply + 4) == 0 &&
	      proto_get_u64(reply + 8) == 0x1234abcd, "the WRITE's reply");
	usleep(1500 * 1000);
	age = oldest_s(ctl);
	CHECK(age == 0, "oldest request %.1f s old after the reply", age);
	close(fd);
	harness_stop(&d);
	return 0;
}
