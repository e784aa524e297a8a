// SPDX-License-Identifier: BSD-3-Clause
/*
 * TLS credentials (GnuTLS): X.509 from a directory in nbdkit's layout
 * (ca-cert.pem, server-cert.pem, server-key.pem, optional ca-crl.pem),
 * and/or PSK from a psktool file. How a connection uses them is tls.c.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls_int.h"

/* GnuTLS's defaults without TLS before 1.2 (the protocol: not by default). */
#define TLS_PRIORITY_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define TLS_PRIORITY_PSK "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:+PSK"

int tls_init(void)
{
	int r = gnutls_global_init();

	if (r < 0) {
		log_error("GnuTLS: %s", gnutls_strerror(r));
		return -1;
	}
	return 0;
}

void tls_creds_put(struct tls_creds *cr)
{
	if (!cr || atomic_fetch_sub(&cr->refs, 1) != 1)
		return;
	if (cr->x509)
		gnutls_certificate_free_credentials(cr->x509);
	if (cr->psk)
		gnutls_psk_free_server_credentials(cr->psk);
	if (cr->prio)
		gnutls_priority_deinit(cr->prio);
	free(cr);
}

struct tls_creds *tls_creds_get(struct tls_creds *cr)
{
	if (cr)
		atomic_fetch_add(&cr->refs, 1);
	return cr;
}

/* Checks psktool's format (one "username:hexkey" per line) so a bad file fails at load. */
static int psk_file_check(const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0, keys = 0, ret = 0;
	ssize_t n;

	if (!f) {
		log_error("tls-psk \"%s\": %s", path, strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, f)) > 0) {
		char *colon, *p;

		lineno++;
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (!n)
			continue;
		colon = strchr(line, ':');
		if (!colon || colon == line || !colon[1]) {
			log_error("tls-psk \"%s\":%d: expected USERNAME:HEXKEY (psktool's format)", path,
				  lineno);
			ret = -1;
			break;
		}
		for (p = colon + 1; *p; p++)
			if (!strchr("0123456789abcdefABCDEF", *p))
				break;
		if (*p || (p - colon - 1) % 2) {
			log_error("tls-psk \"%s\":%d: the key is not hexadecimal", path, lineno);
			ret = -1;
			break;
		}
		keys++;
	}
	free(line);
	fclose(f);
	if (ret == 0 && keys == 0) {
		log_error("tls-psk \"%s\": no keys", path);
		ret = -1;
	}
	return ret;
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

struct tls_creds *tls_creds_load(const char *certs_dir, const char *psk_file, bool verify_peer)
{
	struct tls_creds *cr = calloc(1, sizeof(*cr));
	char ca[4096], crl[4096], cert[4096], key[4096];
	const char *err_pos = NULL;
	int r;

	if (!cr) {
		log_error("TLS credentials: out of memory");
		return NULL;
	}
	cr->refs = 1;
	cr->verify_peer = verify_peer;
	if (certs_dir) {
		snprintf(ca, sizeof(ca), "%s/ca-cert.pem", certs_dir);
		snprintf(crl, sizeof(crl), "%s/ca-crl.pem", certs_dir);
		snprintf(cert, sizeof(cert), "%s/server-cert.pem", certs_dir);
		snprintf(key, sizeof(key), "%s/server-key.pem", certs_dir);
		r = gnutls_certificate_allocate_credentials(&cr->x509);
		if (r < 0)
			goto gnutls_err;
		if (file_exists(ca)) {
			r = gnutls_certificate_set_x509_trust_file(cr->x509, ca, GNUTLS_X509_FMT_PEM);
			if (r < 0) {
				log_error("tls-certificates: \"%s\": %s", ca, gnutls_strerror(r));
				goto fail;
			}
		} else if (verify_peer) {
			log_error("tls-verify-peer: \"%s\" is missing: client certificates cannot be "
				  "checked", ca);
			goto fail;
		}
		if (file_exists(crl)) {
			r = gnutls_certificate_set_x509_crl_file(cr->x509, crl, GNUTLS_X509_FMT_PEM);
			if (r < 0) {
				log_error("tls-certificates: \"%s\": %s", crl, gnutls_strerror(r));
				goto fail;
			}
		}
		r = gnutls_certificate_set_x509_key_file(cr->x509, cert, key, GNUTLS_X509_FMT_PEM);
		if (r < 0) {
			log_error("tls-certificates: \"%s\" and \"%s\": %s", cert, key,
				  gnutls_strerror(r));
			goto fail;
		}
		r = gnutls_certificate_set_known_dh_params(cr->x509, GNUTLS_SEC_PARAM_MEDIUM);
		if (r < 0)
			goto gnutls_err;
	}
	if (psk_file) {
		if (psk_file_check(psk_file) < 0)
			goto fail;
		r = gnutls_psk_allocate_server_credentials(&cr->psk);
		if (r < 0)
			goto gnutls_err;
		/* GnuTLS reads the file at each handshake: edits apply to new connections. */
		r = gnutls_psk_set_server_credentials_file(cr->psk, psk_file);
		if (r < 0)
			goto gnutls_err;
		r = gnutls_psk_set_server_known_dh_params(cr->psk, GNUTLS_SEC_PARAM_MEDIUM);
		if (r < 0)
			goto gnutls_err;
	}
	if (!cr->x509 && !cr->psk) {
		log_error("TLS: neither tls-certificates nor tls-psk is set");
		goto fail;
	}
	r = gnutls_priority_init(&cr->prio, cr->psk ? TLS_PRIORITY_PSK : TLS_PRIORITY_X509, &err_pos);
	if (r < 0)
		goto gnutls_err;
	return cr;

gnutls_err:
	log_error("TLS credentials: %s", gnutls_strerror(r));
fail:
	tls_creds_put(cr);
	return NULL;
}
