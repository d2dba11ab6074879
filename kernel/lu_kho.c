// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate's KHO serialization
 *
 * Writes and reads the format described in lu_format.h. The root page is
 * preserved and registered as a KHO subtree at module load; KHO has no
 * finalize step, so the next kernel sees whatever the root holds at the
 * moment of the jump. The table is allocated (and grown) whenever a
 * session or file is added, so that the reboot notifier only fills memory
 * it already owns and cannot fail.
 */
#include <linux/cleanup.h>
#include <linux/err.h>
#include <linux/io.h>
#include <linux/kexec_handover.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "lu_internal.h"

/*
 * For the selftests only: damage what the next kernel reads, to prove that
 * it refuses bad hand-over data cleanly.
 */
enum { LU_DAMAGE_NONE, LU_DAMAGE_VERSION, LU_DAMAGE_MAGIC, LU_DAMAGE_TABLE };
static unsigned int test_damage_handover;
module_param(test_damage_handover, uint, 0600);
MODULE_PARM_DESC(test_damage_handover,
		 "testing: damage the hand-over data at kexec (1 version, 2 magic, 3 table)");

static struct lu_ser_root *lu_root;
static void *lu_table;
static size_t lu_table_size;

/* Where each array of the table starts, for given counts. */
struct lu_table_layout {
	size_t sessions;
	size_t files;
	size_t deps;
	size_t subsystems;
	size_t end;
};

static void lu_table_layout(struct lu_table_layout *l, size_t nr_sessions,
			    size_t nr_files, size_t nr_deps,
			    size_t nr_subsystems)
{
	l->sessions = sizeof(struct lu_ser_table);
	l->files = size_add(l->sessions,
			    size_mul(nr_sessions, sizeof(struct lu_ser_session)));
	l->deps = size_add(l->files,
			   size_mul(nr_files, sizeof(struct lu_ser_file)));
	l->subsystems = size_add(l->deps, size_mul(nr_deps, sizeof(u64)));
	l->end = size_add(l->subsystems,
			  size_mul(nr_subsystems,
				   sizeof(struct lu_ser_subsystem)));
}

static size_t lu_table_bytes(size_t nr_sessions, size_t nr_files,
			     size_t nr_deps, size_t nr_subsystems)
{
	struct lu_table_layout l;

	lu_table_layout(&l, nr_sessions, nr_files, nr_deps, nr_subsystems);
	return l.end;
}

/**
 * lu_kho_init - preserve the root and register the subtree
 */
int lu_kho_init(void)
{
	int err;

	lu_root = kho_alloc_preserve(sizeof(*lu_root));
	if (IS_ERR(lu_root))
		return PTR_ERR(lu_root);
	lu_root->magic = LU_KHO_MAGIC;
	lu_root->version = LU_KHO_VERSION;
	lu_root->root_size = sizeof(*lu_root);
	err = kho_add_subtree(LU_KHO_SUBTREE, lu_root, sizeof(*lu_root));
	if (err) {
		pr_err("liveupdate: cannot add KHO subtree %s: %d\n",
		       LU_KHO_SUBTREE, err);
		kho_unpreserve_free(lu_root);
		lu_root = NULL;
	}
	return err;
}

/**
 * lu_kho_exit - unregister the subtree and free the outgoing blocks
 */
void lu_kho_exit(void)
{
	kho_remove_subtree(lu_root);
	kho_unpreserve_free(lu_root);
	kho_unpreserve_free(lu_table);
	lu_root = NULL;
	lu_table = NULL;
	lu_table_size = 0;
}

/**
 * lu_kho_reserve - make room in the table for more entries
 * @more_sessions:   sessions about to be added
 * @more_files:      files about to be added
 * @more_deps:       dependencies they name
 * @more_subsystems: subsystems about to be registered
 *
 * Return: 0, -ENOMEM, or -E2BIG beyond the largest block KHO allocates.
 */
int lu_kho_reserve(unsigned int more_sessions, unsigned int more_files,
		   unsigned int more_deps, unsigned int more_subsystems)
{
	size_t need = lu_table_bytes((size_t)lu.nr_out_sessions + more_sessions,
				     (size_t)lu.nr_out_files + more_files,
				     (size_t)lu.nr_out_deps + more_deps,
				     (size_t)lu.nr_subsystems + more_subsystems);
	void *table;

	lockdep_assert_held(&lu.lock);
	if (need <= lu_table_size)
		return 0;
	/* Grow by doubling so that adding n files costs O(n) copies. */
	need = max(need, 2 * lu_table_size);
	table = kho_alloc_preserve(need);
	if (IS_ERR(table))
		return PTR_ERR(table);
	kho_unpreserve_free(lu_table);
	lu_table = table;
	lu_table_size = PAGE_SIZE << get_order(need);
	return 0;
}

/**
 * lu_kho_write_table - fill the table and publish it in the root
 *
 * Runs at FREEZE and in the reboot notifier. lu_kho_reserve() made room
 * for every entry, so this cannot fail. Sessions the notifier dropped are
 * left out.
 */
void lu_kho_write_table(void)
{
	struct lu_ser_session *ser_session;
	struct lu_ser_subsystem *ser_ss;
	struct lu_ser_file *ser_file;
	struct lu_table_layout l;
	struct lu_ser_table *table;
	struct lu_session *session;
	struct lu_subsystem *ss;
	struct lu_file *lf;
	u32 nr_sessions = 0, nr_files = 0, nr_deps = 0, nr_ss = 0;
	u64 *ser_dep;

	lockdep_assert_held(&lu.lock);
	lu_kho_unpublish();
	if (WARN_ON(lu_table_bytes(lu.nr_out_sessions, lu.nr_out_files,
				   lu.nr_out_deps, lu.nr_subsystems) >
		    lu_table_size))
		return;

	list_for_each_entry(session, &lu.outgoing, node) {
		if (session->dropped)
			continue;
		nr_sessions++;
		list_for_each_entry(lf, &session->files, node) {
			nr_files++;
			nr_deps += lf->nr_deps;
		}
	}
	list_for_each_entry(ss, &lu.subsystems, list)
		nr_ss += ss->prepared;
	if (!nr_sessions && !nr_ss)
		return;

	table = lu_table;
	lu_table_layout(&l, nr_sessions, nr_files, nr_deps, nr_ss);
	ser_session = lu_table + l.sessions;
	ser_file = lu_table + l.files;
	ser_dep = lu_table + l.deps;
	ser_ss = lu_table + l.subsystems;
	nr_files = 0;
	nr_deps = 0;
	list_for_each_entry(session, &lu.outgoing, node) {
		if (session->dropped)
			continue;
		strscpy(ser_session->name, session->name,
			sizeof(ser_session->name));
		ser_session->first_file = nr_files;
		ser_session->nr_files = session->nr_files;
		list_for_each_entry(lf, &session->files, node) {
			ser_file->token = lf->token;
			ser_file->data = lf->data;
			strscpy(ser_file->compatible, lf->compatible,
				sizeof(ser_file->compatible));
			ser_file->first_dep = nr_deps;
			ser_file->nr_deps = lf->nr_deps;
			memcpy(ser_dep + nr_deps, lf->deps,
			       lf->nr_deps * sizeof(*ser_dep));
			nr_deps += lf->nr_deps;
			ser_file++;
			nr_files++;
		}
		ser_session++;
	}
	list_for_each_entry(ss, &lu.subsystems, list) {
		if (!ss->prepared)
			continue;
		strscpy(ser_ss->name, ss->name, sizeof(ser_ss->name));
		ser_ss->data = ss->data;
		ser_ss++;
	}
	table->nr_sessions = nr_sessions;
	table->nr_files = nr_files;
	table->nr_deps = nr_deps;
	table->nr_subsystems = nr_ss;
	lu_root->table = virt_to_phys(lu_table);
	lu_root->table_size = lu_table_size;
	lu_info("handing over %u sessions with %u files, %u subsystems\n",
		nr_sessions, nr_files, nr_ss);

	if (test_damage_handover == LU_DAMAGE_VERSION)
		lu_root->version = LU_KHO_VERSION + 1;
	else if (test_damage_handover == LU_DAMAGE_MAGIC)
		lu_root->magic = ~LU_KHO_MAGIC;
	else if (test_damage_handover == LU_DAMAGE_TABLE)
		table->nr_files++;
}

/**
 * lu_kho_unpublish - make the next kernel see no session (CANCEL)
 */
void lu_kho_unpublish(void)
{
	lockdep_assert_held(&lu.lock);
	lu_root->table = 0;
	lu_root->table_size = 0;
}

static bool lu_name_valid(const u8 *name, size_t len)
{
	size_t n = strnlen(name, len);

	return n && n < len;
}

/* Whether @token names a file in [first, first + nr) of @files. */
static bool lu_token_in(const struct lu_ser_file *files, u32 first, u32 nr,
			u64 token)
{
	u32 i;

	for (i = first; i < first + nr; i++)
		if (files[i].token == token)
			return true;
	return false;
}

/* Checks the whole table before anything is built from it. */
static const char *lu_kho_check_table(const void *base, size_t avail)
{
	const struct lu_ser_table *table = base;
	const struct lu_ser_session *sessions;
	const struct lu_ser_subsystem *subsystems;
	const struct lu_ser_file *files;
	struct lu_table_layout l;
	const u64 *deps;
	u32 i, j, k, next_file = 0;

	if (avail < sizeof(*table))
		return "table larger than its block";
	lu_table_layout(&l, table->nr_sessions, table->nr_files,
			table->nr_deps, table->nr_subsystems);
	if (l.end > avail)
		return "table larger than its block";
	sessions = base + l.sessions;
	files = base + l.files;
	deps = base + l.deps;
	subsystems = base + l.subsystems;
	for (i = 0; i < table->nr_sessions; i++) {
		const struct lu_ser_session *s = &sessions[i];

		if (!lu_name_valid(s->name, sizeof(s->name)))
			return "bad session name";
		for (j = 0; j < i; j++)
			if (!strcmp(s->name, sessions[j].name))
				return "duplicate session name";
		if (s->first_file != next_file ||
		    s->nr_files > table->nr_files - next_file)
			return "bad file range";
		for (j = s->first_file; j < s->first_file + s->nr_files; j++) {
			const struct lu_ser_file *f = &files[j];

			if (!lu_name_valid(f->compatible,
					   sizeof(f->compatible)))
				return "bad file handler name";
			if (f->nr_deps > LU_MAX_DEPS ||
			    f->first_dep > table->nr_deps ||
			    f->nr_deps > table->nr_deps - f->first_dep)
				return "bad dependency range";
			if (lu_token_in(files, s->first_file, j - s->first_file,
					f->token))
				return "duplicate token";
			/* Dependencies come first in their session. */
			for (k = 0; k < f->nr_deps; k++)
				if (!lu_token_in(files, s->first_file,
						 j - s->first_file,
						 deps[f->first_dep + k]))
					return "dependency out of order";
		}
		next_file += s->nr_files;
	}
	if (next_file != table->nr_files)
		return "files outside any session";
	for (i = 0; i < table->nr_subsystems; i++) {
		if (!lu_name_valid(subsystems[i].name,
				   sizeof(subsystems[i].name)))
			return "bad subsystem name";
		for (j = 0; j < i; j++)
			if (!strcmp(subsystems[i].name, subsystems[j].name))
				return "duplicate subsystem name";
	}
	return NULL;
}

static int lu_kho_build_incoming(const void *base)
{
	const struct lu_ser_table *table = base;
	const struct lu_ser_session *sessions;
	const struct lu_ser_subsystem *subsystems;
	const struct lu_ser_file *file;
	struct lu_session *session;
	struct lu_table_layout l;
	const u64 *deps;
	u32 i, j;
	int err;

	lu_table_layout(&l, table->nr_sessions, table->nr_files,
			table->nr_deps, table->nr_subsystems);
	sessions = base + l.sessions;
	file = base + l.files;
	deps = base + l.deps;
	subsystems = base + l.subsystems;
	for (i = 0; i < table->nr_sessions; i++) {
		err = lu_session_add_incoming(sessions[i].name, &session);
		if (err)
			return err;
		for (j = 0; j < sessions[i].nr_files; j++, file++) {
			err = lu_file_add_incoming(session, file->token,
						   file->compatible,
						   file->data,
						   deps + file->first_dep,
						   file->nr_deps);
			if (err)
				return err;
		}
	}
	if (!table->nr_subsystems)
		return 0;
	lu.in_subsystems = kcalloc(table->nr_subsystems,
				   sizeof(*lu.in_subsystems), GFP_KERNEL);
	if (!lu.in_subsystems)
		return -ENOMEM;
	for (i = 0; i < table->nr_subsystems; i++) {
		strscpy(lu.in_subsystems[i].name, subsystems[i].name,
			sizeof(lu.in_subsystems[i].name));
		lu.in_subsystems[i].data = subsystems[i].data;
	}
	lu.nr_in_subsystems = table->nr_subsystems;
	return 0;
}

/**
 * lu_kho_load_incoming - read what the previous kernel handed over
 *
 * On any inconsistency nothing is taken over and one line says why; the
 * module still loads.
 */
void lu_kho_load_incoming(void)
{
	const struct lu_ser_table *table;
	struct lu_ser_root *root;
	struct folio *folio;
	const char *why;
	phys_addr_t phys;
	size_t size;
	int err;

	if (!is_kho_boot())
		return;
	err = kho_retrieve_subtree(LU_KHO_SUBTREE, &phys, &size);
	if (err == -ENOENT)
		return;
	if (err) {
		pr_err("liveupdate: cannot read KHO subtree %s: %d\n",
		       LU_KHO_SUBTREE, err);
		return;
	}
	if (size < sizeof(*root)) {
		pr_err("liveupdate: hand-over root too small (%zu bytes), ignored\n",
		       size);
		return;
	}
	/* The root stays reserved memory; it is read and marked in place. */
	root = phys_to_virt(phys);
	if (root->magic == LU_KHO_MAGIC_CONSUMED) {
		lu_info("hand-over data already taken by an earlier load\n");
		return;
	}
	if (root->magic != LU_KHO_MAGIC) {
		pr_err("liveupdate: hand-over root has bad magic %#llx, ignored\n",
		       root->magic);
		return;
	}
	if (root->version != LU_KHO_VERSION) {
		pr_err("liveupdate: hand-over format version %u unsupported (this module reads %u), ignored\n",
		       root->version, LU_KHO_VERSION);
		return;
	}
	root->magic = LU_KHO_MAGIC_CONSUMED;
	if (!root->table) {
		lu_info("no session was handed over\n");
		return;
	}

	folio = kho_restore_folio(root->table);
	if (!folio) {
		pr_err("liveupdate: hand-over table at %#llx not preserved, ignored\n",
		       root->table);
		return;
	}
	table = folio_address(folio);
	why = lu_kho_check_table(table, min_t(u64, root->table_size,
					      folio_size(folio)));
	if (why) {
		pr_err("liveupdate: hand-over table rejected: %s\n", why);
		folio_put(folio);
		return;
	}
	scoped_guard(mutex, &lu.lock)
		err = lu_kho_build_incoming(table);
	if (err) {
		pr_err("liveupdate: cannot take over sessions: %d\n", err);
		lu_session_discard_incoming();
	} else {
		lu_info("took over %u sessions with %u files, %u subsystems\n",
			table->nr_sessions, table->nr_files,
			table->nr_subsystems);
		scoped_guard(mutex, &lu.lock)
			if (lu.nr_in_sessions || lu.nr_in_subsystems)
				lu.state = LIVEUPDATE_STATE_UPDATED;
	}
	folio_put(folio);
}
