// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate's test hooks (debug build only)
 *
 * Built only with LU_DEBUG=y: the module that users load has none of
 * these parameters. The selftests use them to make a step fail at a
 * chosen file and to damage the hand-over data on the outgoing side, so
 * that the next kernel's checks can be proven without physical addresses.
 * One is a debugfs file, not a parameter, because it takes lu.lock:
 * parameters are set under the module's parameter lock, which the other
 * hooks take under lu.lock.
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/io.h>
#include <linux/kstrtox.h>
#include <linux/moduleparam.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "lu_internal.h"

static unsigned long long test_fail_prepare;
module_param(test_fail_prepare, ullong, 0600);
MODULE_PARM_DESC(test_fail_prepare, "testing: PREPARE fails with EIO at this token (0: off)");

static unsigned long long test_fail_freeze;
module_param(test_fail_freeze, ullong, 0600);
MODULE_PARM_DESC(test_fail_freeze, "testing: FREEZE fails with EIO at this token (0: off)");

static unsigned long long test_slow_retrieve;
module_param(test_slow_retrieve, ullong, 0600);
MODULE_PARM_DESC(test_slow_retrieve, "testing: retrieving the file of this token takes 5 s longer, with its locks held (0: off)");

static unsigned long test_fail_folio;
module_param(test_fail_folio, ulong, 0600);
MODULE_PARM_DESC(test_fail_folio, "testing: the Nth memfd folio preserved (PREPARE) or restored (retrieve) from now on fails with ENOMEM, in whichever task handles it (0: off)");

static char test_damage_handover[64];
module_param_string(test_damage_handover, test_damage_handover,
		    sizeof(test_damage_handover), 0600);
MODULE_PARM_DESC(test_damage_handover,
		 "testing: at kexec, damage the hand-over as in transit: version, magic, or PART:BIT to flip a bit of the root, the table, its data area or the first page of its page list (root, table, data, list)");

static char test_damage_memfd[256];
module_param_string(test_damage_memfd, test_damage_memfd, sizeof(test_damage_memfd), 0600);
MODULE_PARM_DESC(test_damage_memfd,
		 "testing: at kexec, flip a bit of these memfds' hand-over data: TOKEN[:BIT],... (BIT counts through the folio records, then the first page of the array's page list; default: bit 0 of the first record's index)");

static char test_miswrite_memfd[512];
module_param_string(test_miswrite_memfd, test_miswrite_memfd,
		    sizeof(test_miswrite_memfd), 0600);
MODULE_PARM_DESC(test_miswrite_memfd,
		 "testing: at kexec, write these memfds' headers wrong, checksums right: TOKEN:FIELD=VALUE or TOKEN:FIELD^=VALUE,... (FIELD: size, pos, seals, records_crc, nr_folios, folios_pages, folios_order, folios_first; VALUE \"table\": the page the next kernel frees first, the table's page list)");

static char test_damage_tree[96];
module_param_string(test_damage_tree, test_damage_tree,
		    sizeof(test_damage_tree), 0600);
MODULE_PARM_DESC(test_damage_tree,
		 "testing: at kexec, flip bit BIT of liveupdatefs instance SESSION's tree (its nodes, then its names): SESSION:BIT");

/**
 * lu_debug_field_named - look a field up by name
 * @fields: a table ending with an empty entry
 * @name:   the field's name
 *
 * Return: the field, or NULL if the table has none of that name.
 */
const struct lu_debug_field *
lu_debug_field_named(const struct lu_debug_field *fields, const char *name)
{
	for (; fields->name; fields++)
		if (!strcmp(fields->name, name))
			return fields;
	return NULL;
}

/**
 * lu_debug_write_field - store or XOR @value into a little-endian field
 * @at:    the field
 * @size:  its bytes; only the first 8 are written
 * @value: the value
 * @xor:   XOR @value in rather than store it
 */
void lu_debug_write_field(void *at, size_t size, u64 value, bool xor)
{
	size_t n = min(size, sizeof(u64));
	__le64 old = 0, new;

	memcpy(&old, at, n);
	new = cpu_to_le64(xor ? le64_to_cpu(old) ^ value : value);
	memcpy(at, &new, n);
}

bool lu_debug_fail_prepare(u64 token)
{
	return test_fail_prepare && token == test_fail_prepare;
}

bool lu_debug_fail_freeze(u64 token)
{
	return test_fail_freeze && token == test_fail_freeze;
}

/**
 * lu_debug_slow_retrieve - test hook: make a retrieve last, locks held
 * @token: the token of the file being retrieved
 *
 * Lets a test prove that other callers do not wait for an unrelated long
 * retrieve, whatever the size of the file.
 */
void lu_debug_slow_retrieve(u64 token)
{
	if (test_slow_retrieve && token == test_slow_retrieve)
		msleep_interruptible(5000);
}

/**
 * lu_debug_fail_folio - test hook: fail one memfd folio's preserve or restore
 *
 * fail-nth is per task, and PREPARE and retrieval spread a memfd over
 * workers, other tasks: this counts the folios of all of them.
 *
 * Return: true for the folio test_fail_folio counted down to.
 */
bool lu_debug_fail_folio(void)
{
	static DEFINE_SPINLOCK(lock);

	guard(spinlock)(&lock);
	return test_fail_folio && !--test_fail_folio;
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

/**
 * lu_debug_damage_tree_bit - which bit test_damage_tree flips for an instance
 * @session: the instance's session name
 * @bit:     set to the bit to flip
 *
 * Return: true if test_damage_tree names @session.
 */
bool lu_debug_damage_tree_bit(const char *session, u64 *bit)
{
	char spec[sizeof(test_damage_tree)], *colon;

	kernel_param_lock(THIS_MODULE);
	strscpy(spec, test_damage_tree, sizeof(spec));
	kernel_param_unlock(THIS_MODULE);
	colon = strrchr(spec, ':');
	if (!colon)
		return false;
	*colon++ = 0;
	return !strcmp(spec, session) && !kstrtou64(colon, 0, bit);
}

/**
 * lu_debug_miswrite_memfd - what test_miswrite_memfd says for a memfd
 * @token: the memfd's token
 * @field: set to the field's name (at most @len bytes with the NUL)
 * @len:   room at @field
 * @value: set to the value
 * @xor:   set if @value is to be XORed in rather than stored
 *
 * Return: true if test_miswrite_memfd names @token, with a valid entry.
 */
bool lu_debug_miswrite_memfd(u64 token, char *field, size_t len, u64 *value,
			     bool *xor)
{
	char spec[sizeof(test_miswrite_memfd)], *rest = spec, *entry, *name, *eq;
	u64 t;

	kernel_param_lock(THIS_MODULE);
	strscpy(spec, test_miswrite_memfd, sizeof(spec));
	kernel_param_unlock(THIS_MODULE);
	while ((entry = strsep(&rest, ",\n"))) {
		name = strchr(entry, ':');
		eq = name ? strchr(name, '=') : NULL;
		if (!eq)
			continue;
		*name++ = 0;
		*eq = 0;
		if (kstrtou64(entry, 0, &t) || t != token)
			continue;
		if (!strcmp(eq + 1, "table"))
			*value = lu_kho_debug_table_page();
		else if (kstrtou64(eq + 1, 0, value))
			continue;
		*xor = eq > name && eq[-1] == '^';
		if (*xor)
			eq[-1] = 0;
		return strscpy(field, name, len) > 0;
	}
	return false;
}

static struct dentry *lu_debug_dir;

/* debugfs liveupdate/read_miswritten_table: see lu_kho_debug_read_miswritten(). */
static ssize_t lu_debug_read_table_write(struct file *file,
					 const char __user *ubuf, size_t len,
					 loff_t *ppos)
{
	char spec[64];
	int err;

	if (len >= sizeof(spec))
		return -EINVAL;
	if (copy_from_user(spec, ubuf, len))
		return -EFAULT;
	spec[len] = 0;
	err = lu_kho_debug_read_miswritten(spec);
	return err ?: len;
}

static const struct file_operations lu_debug_read_table_fops = {
	.owner = THIS_MODULE,
	.write = lu_debug_read_table_write,
};

/**
 * lu_debug_init - create the debugfs hooks (liveupdate/ in debugfs)
 *
 * A failure only leaves them out: tests that need them fail instead.
 */
void lu_debug_init(void)
{
	lu_debug_dir = debugfs_create_dir("liveupdate", NULL);
	debugfs_create_file("read_miswritten_table", 0200, lu_debug_dir, NULL,
			    &lu_debug_read_table_fops);
}

/**
 * lu_debug_exit - remove what lu_debug_init() created
 */
void lu_debug_exit(void)
{
	debugfs_remove(lu_debug_dir);
}
