// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate's test hooks (debug build only)
 *
 * Built only with LU_DEBUG=y: the module that users load has none of
 * these parameters. The selftests use them to make a step fail at a
 * chosen file and to damage the hand-over data on the outgoing side, so
 * that the next kernel's checks can be proven without physical addresses.
 */
#include <linux/kstrtox.h>
#include <linux/moduleparam.h>
#include <linux/string.h>

#include "lu_internal.h"

static unsigned long long test_fail_prepare;
module_param(test_fail_prepare, ullong, 0600);
MODULE_PARM_DESC(test_fail_prepare, "testing: PREPARE fails with EIO at this token (0: off)");

static unsigned long long test_fail_freeze;
module_param(test_fail_freeze, ullong, 0600);
MODULE_PARM_DESC(test_fail_freeze, "testing: FREEZE fails with EIO at this token (0: off)");

enum { LU_DAMAGE_NONE, LU_DAMAGE_VERSION, LU_DAMAGE_MAGIC, LU_DAMAGE_TABLE };
static unsigned int test_damage_handover;
module_param(test_damage_handover, uint, 0600);
MODULE_PARM_DESC(test_damage_handover,
		 "testing: damage the hand-over data at kexec (1 version, 2 magic, 3 table)");

static char test_damage_memfd[256];
module_param_string(test_damage_memfd, test_damage_memfd, sizeof(test_damage_memfd), 0600);
MODULE_PARM_DESC(test_damage_memfd,
		 "testing: at kexec, flip a bit of these memfds' hand-over data: TOKEN[:BIT],... (BIT counts through the header, the folio records, then the first page of the array's page list; default: a bit of nr_folios)");

bool lu_debug_fail_prepare(u64 token)
{
	return test_fail_prepare && token == test_fail_prepare;
}

bool lu_debug_fail_freeze(u64 token)
{
	return test_fail_freeze && token == test_fail_freeze;
}

void lu_debug_damage(struct lu_ser_root *root, struct lu_ser_table *table)
{
	switch (test_damage_handover) {
	case LU_DAMAGE_VERSION:
		root->version = LU_KHO_VERSION + 1;
		break;
	case LU_DAMAGE_MAGIC:
		root->magic = ~LU_KHO_MAGIC;
		break;
	case LU_DAMAGE_TABLE:
		table->nr_files++;
		break;
	}
}

/**
 * lu_debug_damage_memfd_bit - which bit test_damage_memfd flips for a memfd
 * @token: the memfd's token
 * @bit:   set to the bit to flip
 *
 * Return: true if test_damage_memfd names @token.
 */
bool lu_debug_damage_memfd_bit(u64 token, u64 *bit)
{
	char spec[sizeof(test_damage_memfd)], *rest = spec, *entry, *colon;
	bool found = false;
	u64 t;

	kernel_param_lock(THIS_MODULE);
	strscpy(spec, test_damage_memfd, sizeof(spec));
	kernel_param_unlock(THIS_MODULE);
	while (!found && (entry = strsep(&rest, ",\n"))) {
		colon = strchr(entry, ':');
		if (colon)
			*colon++ = 0;
		if (kstrtou64(entry, 0, &t) || t != token)
			continue;
		*bit = offsetof(struct lu_ser_memfd, nr_folios) * BITS_PER_BYTE;
		found = !colon || !kstrtou64(colon, 0, bit);
	}
	return found;
}
