// SPDX-License-Identifier: BSD-3-Clause
/*
 * libFuzzer target for the control socket's request parser (daemon/ops/ctlproto.c):
 * any bytes as one request line, then the reply line the daemon would send,
 * which must be one line of valid JSON. Also reads the arguments the way the
 * commands do, typed by the command table.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/ops/ctlproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_request req;
	const char *cls = NULL;
	char err[512], *line;
	json_object *back;

	if (ctl_request_parse((const char *)data, size, &req, &cls, err, sizeof(err)) == 0) {
		const struct ctl_arg_spec *a;

		for (a = req.cmd->args; a->name; a++) {
			if (a->type == CTL_ARG_STRING && ctl_arg_string(&req, a->name))
				assert(strlen(ctl_arg_string(&req, a->name)) <= size);
			else if (a->type == CTL_ARG_BOOL)
				(void)ctl_arg_bool(&req, a->name, false);
			else
				(void)ctl_arg_int(&req, a->name, 0);
		}
		line = ctl_reply_return(req.id, json_object_new_string(req.cmd->name));
	} else {
		assert(cls && err[0]);
		line = ctl_reply_error(req.id, cls, err);
	}
	assert(line);
	/* One line, and JSON a client can parse. */
	assert(strchr(line, '\n') == line + strlen(line) - 1);
	back = json_tokener_parse(line);
	assert(back);
	json_object_put(back);
	free(line);
	ctl_request_release(&req);
	return 0;
}
