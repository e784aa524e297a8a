/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tls_int.h: what tls_creds.c (credentials, main thread) and tls.c (each
 * connection's TLS, on its worker) share. Private to them.
 */
#ifndef URINGNBD_TLS_INT_H
#define URINGNBD_TLS_INT_H

#include <gnutls/gnutls.h>

#include "conn_int.h"

struct tls_creds {
	atomic_int refs;
	gnutls_certificate_credentials_t x509; /* or NULL */
	gnutls_psk_server_credentials_t psk;   /* or NULL */
	gnutls_priority_t prio;
	bool verify_peer;
};

#endif
