// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate's test hooks (debug build only)
 *
 * Built only with LU_DEBUG=y: the module that users load has none of
 * these parameters. The selftests use them to make a step fail at a
 * chosen file and to damage the hand-over data on the outgoing side, so
 * that the next kernel's checks can be proven without physical addresses.
 */
#include <linux/io.h>
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

static char test_damage_handover[64];
module_param_string(test_damage_handover, test_damage_handover,
		    sizeof(test_damage_handover), 0600);
MODULE_PARM_DESC(test_damage_handover,
		 "testing: at kexec, damage the hand-over as in transit: version, magic, or PART:BIT to flip a bit of the root, the table, its data area or the first page of its page list (root, table, data, list)");

static char test_damage_memfd[256];
module_param_string(test_damage_memfd, test_damage_memfd, sizeof(test_damage_memfd), 0600);
MODULE_PARM_DESC(test_damage_memfd,
		 "testing: at kexec, flip a bit of these memfds' hand-over data: TOKEN[:BIT],... (BIT counts through the folio records, then the first page of the array's page list; default: bit 0 of the first record's index)");

bool lu_debug_fail_prepare(u64 token)
{
	return test_fail_prepare && token == test_fail_prepare;
}

bool lu_debug_fail_freeze(u64 token)
{
	return test_fail_freeze && token == test_fail_freeze;
}

/**
 * lu_debug_damage - test hook: damage the root or the table in transit
 * @root:        the root, its checksums written
 * @table:       the table
 * @data_offset: where the table's data area starts
 *
 * Does what test_damage_handover says, if anything.
 */
void lu_debug_damage(struct lu_ser_root *root, void *table,
		     size_t data_offset)
{
	char spec[sizeof(test_damage_handover)], *colon;
	size_t len;
	u8 *part;
	u64 bit;

	kernel_param_lock(THIS_MODULE);
	strscpy(spec, test_damage_handover, sizeof(spec));
	kernel_param_unlock(THIS_MODULE);
	strim(spec);
	if (!strcmp(spec, "version")) {
		root->version = LU_KHO_VERSION + 1;
		return;
	}
	if (!strcmp(spec, "magic")) {
		root->magic = ~LU_KHO_MAGIC;
		return;
	}
	colon = strchr(spec, ':');
	if (!colon || kstrtou64(colon + 1, 0, &bit))
		return;
	*colon = 0;
	if (!strcmp(spec, "root")) {
		part = (u8 *)root;
		len = sizeof(*root);
	} else if (!strcmp(spec, "table")) {
		part = table;
		len = data_offset;
	} else if (!strcmp(spec, "data")) {
		part = table + data_offset;
		len = root->table_bytes - data_offset;
	} else if (!strcmp(spec, "list")) {
		part = phys_to_virt(root->table.first.phys);
		len = PAGE_SIZE;
	} else {
		return;
	}
	if (bit / 8 < len)
		part[bit / 8] ^= 1 << (bit % 8);
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
		*bit = 0;
		found = !colon || !kstrtou64(colon, 0, bit);
	}
	return found;
}
