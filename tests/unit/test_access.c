// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of daemon/base/access.c: parsing the allow/deny/tls-allow lists and
 * judging clients by address (IPv4, IPv6, IPv4-mapped), CIDR prefix, unix
 * credentials and TLS identity, allow before deny.
 */
#include <arpa/inet.h>
#include <check.h>
#include <string.h>
#include <sys/socket.h>

#include "../../daemon/base/base.h"

static struct access a;
static char err[256];

static int parse(const char *allow, const char *deny, const char *tls_allow, bool tls_required)
{
	struct access_spec spec = { .allow = allow, .deny = deny, .tls_allow = tls_allow,
				    .tls_required = tls_required };

	access_free(&a);
	return access_parse(&a, &spec, err, sizeof(err));
}

static struct client_key key4(const char *addr)
{
	struct client_key k = { .family = AF_INET };

	ck_assert_int_eq(inet_pton(AF_INET, addr, k.addr), 1);
	return k;
}

static struct client_key key6(const char *addr)
{
	struct client_key k = { .family = AF_INET6 };

	ck_assert_int_eq(inet_pton(AF_INET6, addr, k.addr), 1);
	return k;
}

static enum access_verdict judge(const struct client_key *k, uint32_t gid, bool tls,
				 const char *name)
{
	struct client_peer peer = { .cred = k->family == AF_UNIX, .gid = gid };
	struct client_who who = { .key = k, .peer = &peer, .tls = tls, .tls_name = name };

	return access_check(&a, &who);
}

START_TEST(test_no_rules_admit_everyone)
{
	struct client_key k = key4("192.0.2.1"), u = { .family = AF_UNIX, .uid = 1000 };

	ck_assert_int_eq(parse(NULL, NULL, NULL, false), 0);
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&u, 1000, false, NULL), ACCESS_OK);
}
END_TEST

START_TEST(test_cidr_v4_and_mapped)
{
	struct client_key in = key4("10.1.2.3"), out = key4("11.0.0.1");
	struct client_key mapped = key6("::ffff:10.200.0.1"), mapped_out = key6("::ffff:12.0.0.1");

	ck_assert_int_eq(parse("10.0.0.0/8", "all", NULL, false), 0);
	ck_assert_int_eq(judge(&in, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&out, 0, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(judge(&mapped, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&mapped_out, 0, false, NULL), ACCESS_DENIED);
}
END_TEST

START_TEST(test_prefix_edges)
{
	struct client_key k;

	ck_assert_int_eq(parse("192.168.1.128/25", "all", NULL, false), 0);
	k = key4("192.168.1.128");
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
	k = key4("192.168.1.255");
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
	k = key4("192.168.1.127");
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(parse("2001:db8::/33", "anyipv6", NULL, false), 0);
	k = key6("2001:db8:7fff::1");
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
	k = key6("2001:db8:8000::1");
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_DENIED);
	/* anyipv6 does not catch an IPv4 client: it is let in. */
	k = key4("8.8.8.8");
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(parse("0.0.0.0/0", "all", NULL, false), 0);
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
}
END_TEST

START_TEST(test_unix_credentials)
{
	struct client_key root = { .family = AF_UNIX, .uid = 0 }, user = { .family = AF_UNIX, .uid = 1000 };
	struct client_key tcp = key4("127.0.0.1");

	ck_assert_int_eq(parse("uid:0 gid:6", "all", NULL, false), 0);
	ck_assert_int_eq(judge(&root, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&user, 1000, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(judge(&user, 6, false, NULL), ACCESS_OK);
	/* Credentials mean nothing on TCP. */
	ck_assert_int_eq(judge(&tcp, 0, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(parse("uid:root", "anyunix", NULL, false), 0);
	ck_assert_int_eq(judge(&root, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&user, 0, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(judge(&tcp, 0, false, NULL), ACCESS_OK);
}
END_TEST

/* vsock peers by context id: a guest's CID, or 1 (the loopback). */
START_TEST(test_vsock_cids)
{
	struct client_key g3 = { .family = AF_VSOCK, .cid = 3 }, g4 = { .family = AF_VSOCK, .cid = 4 };
	struct client_key lo = { .family = AF_VSOCK, .cid = 1 }, root = { .family = AF_UNIX };
	struct client_key tcp = key4("127.0.0.1");
	char name[64];

	ck_assert_int_eq(parse("vsock:3", "anyvsock", NULL, false), 0);
	ck_assert_int_eq(judge(&g3, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&g4, 0, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(judge(&lo, 0, false, NULL), ACCESS_DENIED);
	/* Other families: neither item matches them. */
	ck_assert_int_eq(judge(&root, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&tcp, 0, false, NULL), ACCESS_OK);
	/* A CID is not a uid: uid:3 does not let guest 3 in. */
	ck_assert_int_eq(parse("uid:3", "all", NULL, false), 0);
	ck_assert_int_eq(judge(&g3, 0, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(parse("vsock:x", NULL, NULL, false), -1);
	ck_assert(strstr(err, "vsock:CID"));
	ck_assert_int_eq(parse("vsock:", NULL, NULL, false), -1);
	ck_assert_int_eq(parse("vsock:4294967296", NULL, NULL, false), -1);
	ck_assert_str_eq(client_name(&g3, name, sizeof(name)), "vsock cid 3");
}
END_TEST

/* Allow wins over deny; a client matching neither is let in. */
START_TEST(test_allow_before_deny)
{
	struct client_key k = key4("127.0.0.1"), other = key4("127.0.0.2");

	ck_assert_int_eq(parse("127.0.0.1", "127.0.0.0/8", NULL, false), 0);
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&other, 0, false, NULL), ACCESS_DENIED);
	ck_assert_int_eq(parse(NULL, "127.0.0.2", NULL, false), 0);
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_OK);
	ck_assert_int_eq(judge(&other, 0, false, NULL), ACCESS_DENIED);
}
END_TEST

START_TEST(test_tls_rules)
{
	struct client_key k = key4("127.0.0.1");

	ck_assert_int_eq(parse(NULL, NULL, NULL, true), 0);
	ck_assert(a.tls_only);
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_NEEDS_TLS);
	ck_assert_int_eq(judge(&k, 0, true, NULL), ACCESS_OK);
	ck_assert_int_eq(parse(NULL, NULL, "alice, bob", false), 0);
	ck_assert(a.tls_only);
	ck_assert_int_eq(judge(&k, 0, false, NULL), ACCESS_NEEDS_TLS);
	ck_assert_int_eq(judge(&k, 0, true, "alice"), ACCESS_OK);
	ck_assert_int_eq(judge(&k, 0, true, "bob"), ACCESS_OK);
	ck_assert_int_eq(judge(&k, 0, true, "mallory"), ACCESS_DENIED);
	ck_assert_int_eq(judge(&k, 0, true, NULL), ACCESS_DENIED);
	/* The address rules still apply to a TLS client. */
	ck_assert_int_eq(parse(NULL, "all", "alice", false), 0);
	ck_assert_int_eq(judge(&k, 0, true, "alice"), ACCESS_DENIED);
}
END_TEST

START_TEST(test_bad_lists)
{
	ck_assert_int_eq(parse("10.0.0.0/33", NULL, NULL, false), -1);
	ck_assert(strstr(err, "10.0.0.0/33"));
	ck_assert_int_eq(parse("not-an-address", NULL, NULL, false), -1);
	ck_assert_int_eq(parse("uid:no-such-user-here", NULL, NULL, false), -1);
	ck_assert(strstr(err, "no such user"));
	ck_assert_int_eq(parse("gid:no-such-group-here", NULL, NULL, false), -1);
	ck_assert_int_eq(parse("10.0.0.1/", NULL, NULL, false), -1);
	ck_assert_int_eq(parse(NULL, NULL, " , ", false), -1);
	ck_assert(strstr(err, "no names"));
	/* Separators: commas, spaces and '+' (for --export). */
	ck_assert_int_eq(parse("10.0.0.1+10.0.0.2, 10.0.0.3 ::1", NULL, NULL, false), 0);
	ck_assert_uint_eq(a.nallow, 4);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("access");
	TCase *tc = tcase_create("rules");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_no_rules_admit_everyone);
	tcase_add_test(tc, test_cidr_v4_and_mapped);
	tcase_add_test(tc, test_prefix_edges);
	tcase_add_test(tc, test_unix_credentials);
	tcase_add_test(tc, test_vsock_cids);
	tcase_add_test(tc, test_allow_before_deny);
	tcase_add_test(tc, test_tls_rules);
	tcase_add_test(tc, test_bad_lists);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	access_free(&a);
	return failed ? 1 : 0;
}
