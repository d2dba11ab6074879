// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate's test hooks (debug build only)
 *
 * Built only with LU_DEBUG=y: the module that users load has none of
 * these parameters. The selftests use them to make a step fail at a
 * chosen file and to damage the hand-over data on the outgoing side, so
 * that the next kernel's checks can be proven without physical addresses.
 */
#include <linux/moduleparam.h>

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

static unsigned long long test_damage_memfd;
module_param(test_damage_memfd, ullong, 0600);
MODULE_PARM_DESC(test_damage_memfd,
		 "testing: at freeze, the memfd of this token claims one folio more than it hands over (0: off)");

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

void lu_debug_damage_memfd(u64 token, struct lu_ser_memfd *ser, u64 nr)
{
	if (test_damage_memfd && token == test_damage_memfd)
		ser->nr_folios = nr + 1;
}
