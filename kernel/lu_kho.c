// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate's KHO serialization
 *
 * Writes and reads the format described in lu_format.h. The root page is
 * preserved and registered as a KHO subtree at module load; KHO has no
 * finalize step, so the next kernel sees whatever the root holds at the
 * moment of the jump. The table is a vmalloc area, preserved and grown
 * (doubling) whenever a session, file or subsystem is added, so that the
 * reboot notifier only fills memory it already owns and cannot fail. The
 * root carries the checksums of the table and of its page list; the next
 * kernel reads both in place, copies the table, and gives the table's
 * pages back only once the sessions are built.
 */
#include <linux/cleanup.h>
#include <linux/crc32.h>
#include <linux/err.h>
#include <linux/io.h>
#include <linux/ioport.h>
#include <linux/kexec_handover.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "lu_internal.h"

static struct lu_ser_root *lu_root;
/* The outgoing table: a vmalloc area of lu_table_size bytes, preserved. */
static void *lu_table;
static size_t lu_table_size;
static struct kho_vmalloc lu_table_kho;

/* Where each array of the table starts, for given counts. */
struct lu_table_layout {
	size_t sessions;
	size_t files;
	size_t deps;
	size_t subsystems;
	size_t data;
	size_t end;
};

static void lu_table_layout(struct lu_table_layout *l, size_t nr_sessions,
			    size_t nr_files, size_t nr_deps,
			    size_t nr_subsystems, size_t data_bytes)
{
	l->sessions = sizeof(struct lu_ser_table);
	l->files = size_add(l->sessions,
			    size_mul(nr_sessions, sizeof(struct lu_ser_session)));
	l->deps = size_add(l->files,
			   size_mul(nr_files, sizeof(struct lu_ser_file)));
	l->subsystems = size_add(l->deps, size_mul(nr_deps, sizeof(u64)));
	l->data = size_add(l->subsystems,
			   size_mul(nr_subsystems,
				    sizeof(struct lu_ser_subsystem)));
	l->end = size_add(l->data, data_bytes);
}

static void lu_table_layout_of(struct lu_table_layout *l,
			       const struct lu_ser_table *table)
{
	lu_table_layout(l, table->nr_sessions, table->nr_files, table->nr_deps,
			table->nr_subsystems, table->data_bytes);
}

/**
 * lu_data_bytes - room one participant's data takes in the table
 * @size: its bytes
 *
 * Return: @size, rounded up to keep the next data 8-byte aligned.
 */
size_t lu_data_bytes(size_t size)
{
	return ALIGN(size, 8);
}

/**
 * lu_crc - the hand-over format's checksum
 * @p:   bytes to add
 * @len: how many
 * @crc: the checksum of what came before, or 0 to start
 *
 * Return: the CRC32 (IEEE, as crc32_le with ~0 in and out) of what came
 * before and @p.
 */
u32 lu_crc(const void *p, size_t len, u32 crc)
{
	return ~crc32_le(~crc, p, len);
}

/**
 * lu_phys_readable - whether handed-over memory can be read in place
 * @phys: start
 * @len:  bytes
 *
 * Handed-over data is read through the direct map and checked before KHO
 * is asked to restore it. An address taken from damaged data must not
 * fault there: it must start a page, and every page must be RAM.
 *
 * Return: true if [@phys, @phys + @len) is page-aligned and all RAM.
 */
bool lu_phys_readable(phys_addr_t phys, size_t len)
{
	unsigned long pfn, last;

	if (!phys || !PAGE_ALIGNED(phys) || !len || phys + len - 1 < phys)
		return false;
	last = PHYS_PFN(phys + len - 1);
	for (pfn = PHYS_PFN(phys); pfn <= last; pfn++)
		if (!page_is_ram(pfn))
			return false;
	return true;
}

/*
 * Copies hand-over memory whose address is not proven yet: the page may be
 * free, another's, or unmapped from the direct map (KFENCE, secretmem), so
 * it is read without faulting and without KASAN's checks, as kmemleak
 * reads memory it does not own. Return: 0 or -EFAULT.
 */
static int lu_read_unproven(void *dst, phys_addr_t phys, size_t len)
{
	return copy_from_kernel_nofault(dst, phys_to_virt(phys), len) ?
	       -EFAULT : 0;
}

/*
 * Visits the pages of a vmalloc area preserved by kho_preserve_vmalloc()
 * (the previous kernel's, or our own), through its page list
 * (include/linux/kho/abi/kexec_handover.h): @data for each of its pages
 * in order, then @list (if any) for the page of the list that named them,
 * which @list may free. Every page is checked to be RAM before it is
 * visited, and a damaged list cannot make the walk longer than the area.
 * With @chunk_buf (a page), the list is read through copies made by
 * lu_read_unproven(); without, in place (our own area, or one checked
 * before).
 *
 * Return: 0, what a visit returned, -ENXIO if the list is cut short or
 * too long, or -EFAULT for a page that is not RAM or cannot be read.
 */
int lu_vmalloc_walk(const struct kho_vmalloc *desc, lu_page_fn data,
		    lu_page_fn list, void *ctx, void *chunk_buf)
{
	unsigned long nr_chunks = 0, i = 0;
	phys_addr_t next = desc->first.phys;
	unsigned int slot;
	int err;

	if (desc->order)
		return -ENXIO;
	while (next) {
		const struct kho_vmalloc_chunk *chunk;
		phys_addr_t this = next;

		/* kho_preserve_vmalloc() ends with a chunk that has room. */
		if (nr_chunks++ > desc->total_pages / KHO_VMALLOC_SIZE)
			return -ENXIO;
		if (!lu_phys_readable(this, PAGE_SIZE))
			return -EFAULT;
		if (chunk_buf) {
			if (lu_read_unproven(chunk_buf, this, PAGE_SIZE))
				return -EFAULT;
			chunk = chunk_buf;
		} else {
			chunk = phys_to_virt(this);
		}
		for (slot = 0; slot < KHO_VMALLOC_SIZE &&
			       i < desc->total_pages; slot++, i++) {
			if (!lu_phys_readable(chunk->phys[slot], PAGE_SIZE))
				return -EFAULT;
			err = data(ctx, chunk->phys[slot], NULL);
			if (err)
				return err;
		}
		next = chunk->hdr.next.phys;
		if (list) {
			err = list(ctx, this, chunk);
			if (err)
				return err;
		}
		cond_resched();
	}
	return i == desc->total_pages ? 0 : -ENXIO;
}

struct lu_vmalloc_reader {
	void *dst;
	void *page_buf;
	size_t left;
	u32 crc;
	u32 list_crc;
	lu_bytes_fn inspect;
	void *inspect_ctx;
};

static int lu_vmalloc_read_page(void *ctx, phys_addr_t phys,
				const void *unused)
{
	struct lu_vmalloc_reader *r = ctx;
	size_t n = min_t(size_t, r->left, PAGE_SIZE);
	void *to = r->dst ?: r->page_buf;

	if (!n)
		return 0;
	if (!to)	/* our own area */
		to = phys_to_virt(phys);
	else if (lu_read_unproven(to, phys, n))
		return -EFAULT;
	r->crc = lu_crc(to, n, r->crc);
	if (r->inspect)
		r->inspect(r->inspect_ctx, to, n);
	if (r->dst)
		r->dst += n;
	r->left -= n;
	return 0;
}

static int lu_vmalloc_read_list(void *ctx, phys_addr_t phys,
				const void *page)
{
	struct lu_vmalloc_reader *r = ctx;

	r->list_crc = lu_crc(page, PAGE_SIZE, r->list_crc);
	return 0;
}

/**
 * lu_vmalloc_read - read a preserved vmalloc area in place
 * @desc:     the area's KHO descriptor
 * @dst:      where to copy its first @len bytes, or NULL
 * @len:      bytes to read, at most the area's size
 * @crc:      set to the lu_crc() of those bytes
 * @list_crc: if not NULL, set to the lu_crc() of the area's page list
 * @bounce:   LU_READ_BOUNCE_SIZE bytes for copies of pages on the way, or
 *            NULL for our own area, read in place
 * @inspect:  if not NULL, called with each piece of those bytes as read
 *            (a page, or what is left of @len), before they are checked:
 *            it may only gather what a checksum mismatch makes void
 * @inspect_ctx: its first argument
 *
 * The area may be damaged: every page is read with lu_read_unproven().
 * Nothing is restored or changed: a failure leaves the area as it was.
 *
 * Return: 0, -ENXIO for a page list cut short, too long or of the wrong
 * shape, or -EFAULT for a page that is not RAM or cannot be read.
 */
int lu_vmalloc_read(const struct kho_vmalloc *desc, void *dst, size_t len,
		    u32 *crc, u32 *list_crc, void *bounce,
		    lu_bytes_fn inspect, void *inspect_ctx)
{
	struct lu_vmalloc_reader r = {
		.dst = dst,
		.page_buf = bounce ? bounce + PAGE_SIZE : NULL,
		.left = len,
		.inspect = inspect,
		.inspect_ctx = inspect_ctx,
	};
	int err;

	if (len > (size_t)desc->total_pages * PAGE_SIZE)
		return -ENXIO;
	err = lu_vmalloc_walk(desc, lu_vmalloc_read_page,
			      list_crc ? lu_vmalloc_read_list : NULL, &r,
			      bounce);
	*crc = r.crc;
	if (list_crc)
		*list_crc = r.list_crc;
	return err;
}

int lu_vmalloc_free_page(void *ctx, phys_addr_t phys, const void *unused)
{
	struct page *page = kho_restore_pages(phys, 1);

	if (!page)
		return -EFAULT;
	__free_page(page);
	return 0;
}

/*
 * Gives back the pages of a preserved vmalloc area that lu_vmalloc_read()
 * checked, page list included, without mapping them again.
 */
static void lu_vmalloc_release(const struct kho_vmalloc *desc)
{
	lu_vmalloc_walk(desc, lu_vmalloc_free_page, lu_vmalloc_free_page,
			NULL, NULL);
}

/**
 * lu_kho_init - preserve the root and register the subtree
 *
 * Return: 0 or a negative errno.
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
	lu_root->reserved = 0;
	err = kho_add_subtree(LU_KHO_SUBTREE, lu_root, sizeof(*lu_root));
	if (err) {
		pr_err("liveupdate: cannot add KHO subtree %s: %d\n",
		       LU_KHO_SUBTREE, err);
		kho_unpreserve_free(lu_root);
		lu_root = NULL;
	}
	return err;
}

/* Frees the outgoing table; the root must not name it any more. */
static void lu_table_free(void)
{
	if (!lu_table)
		return;
	kho_unpreserve_vmalloc(&lu_table_kho);
	vfree(lu_table);
	lu_table = NULL;
	lu_table_size = 0;
	lu_table_kho = (struct kho_vmalloc){};
}

/**
 * lu_kho_exit - unregister the subtree and free the outgoing blocks
 */
void lu_kho_exit(void)
{
	kho_remove_subtree(lu_root);
	kho_unpreserve_free(lu_root);
	lu_root = NULL;
	lu_table_free();
}

/**
 * lu_kho_reserve - make room in the table for more entries
 * @more_sessions:   sessions about to be added
 * @more_files:      files about to be added
 * @more_deps:       dependencies they name
 * @more_subsystems: subsystems about to be registered
 * @more_data:       bytes of participants' data about to be added
 *                   (lu_data_bytes() each)
 *
 * Return: 0, -ENOMEM, or -ENOSPC beyond LU_TABLE_MAX_BYTES.
 */
int lu_kho_reserve(unsigned int more_sessions, unsigned int more_files,
		   unsigned int more_deps, unsigned int more_subsystems,
		   size_t more_data)
{
	struct kho_vmalloc kho = {};
	struct lu_table_layout l;
	size_t need;
	void *table;
	int err;

	lockdep_assert_held(&lu.lock);
	lu_table_layout(&l, (size_t)lu.nr_out_sessions + more_sessions,
			(size_t)lu.nr_out_files + more_files,
			(size_t)lu.nr_out_deps + more_deps,
			(size_t)lu.nr_subsystems + more_subsystems,
			size_add(lu.nr_out_data_bytes, more_data));
	need = l.end;
	if (need <= lu_table_size)
		return 0;
	if (need > LU_TABLE_MAX_BYTES)
		return -ENOSPC;
	/* Grow by doubling so that adding n files costs O(n) copies. */
	need = PAGE_ALIGN(min(max(need, 2 * lu_table_size),
			      LU_TABLE_MAX_BYTES));
	table = vmalloc(need);
	if (!table)
		return -ENOMEM;
	err = kho_preserve_vmalloc(table, &kho);
	if (err) {
		vfree(table);
		return err;
	}
	/* A published table is written again (FREEZE, notifier) anyway. */
	lu_kho_unpublish();
	lu_table_free();
	lu_table = table;
	lu_table_size = need;
	lu_table_kho = kho;
	return 0;
}

/* Copies @data into the data area at *@used, and names it in the entry. */
static void lu_table_put_data(void *area, size_t *used,
			      const struct lu_data *data, __u32 *offset,
			      __u32 *size)
{
	*offset = *used;
	*size = data->size;
	if (!data->size)
		return;
	memcpy(area + *used, data->ptr, data->size);
	memset(area + *used + data->size, 0,
	       lu_data_bytes(data->size) - data->size);
	*used += lu_data_bytes(data->size);
}

/**
 * lu_kho_write_table - fill the table and publish it in the root
 *
 * Runs at FREEZE and in the reboot notifier. lu_kho_reserve() made room
 * for every entry and every participant's data, so this cannot fail.
 * Sessions the notifier dropped are left out.
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
	u32 nr_sessions = 0, nr_files = 0, nr_deps = 0, nr_ss = 0, crc;
	size_t data_bytes = 0, used = 0;
	u64 *ser_dep;

	lockdep_assert_held(&lu.lock);
	lu_kho_unpublish();
	list_for_each_entry(session, &lu.outgoing, node) {
		if (session->state == LU_SESSION_DROPPED)
			continue;
		nr_sessions++;
		list_for_each_entry(lf, &session->files, node) {
			nr_files++;
			nr_deps += lf->nr_deps;
			data_bytes += lu_data_bytes(lf->data.size);
		}
	}
	list_for_each_entry(ss, &lu.subsystems, list) {
		if (!ss->prepared)
			continue;
		nr_ss++;
		data_bytes += lu_data_bytes(ss->data.size);
	}
	/* Nothing to hand over: no table, and none was reserved either. */
	if (!nr_sessions && !nr_ss)
		return;
	lu_table_layout(&l, nr_sessions, nr_files, nr_deps, nr_ss, data_bytes);
	if (WARN_ON_ONCE(l.end > lu_table_size))
		return;

	table = lu_table;
	ser_session = lu_table + l.sessions;
	ser_file = lu_table + l.files;
	ser_dep = lu_table + l.deps;
	ser_ss = lu_table + l.subsystems;
	nr_files = 0;
	nr_deps = 0;
	list_for_each_entry(session, &lu.outgoing, node) {
		if (session->state == LU_SESSION_DROPPED)
			continue;
		strscpy(ser_session->name, session->name,
			sizeof(ser_session->name));
		ser_session->first_file = nr_files;
		ser_session->nr_files = session->nr_files;
		list_for_each_entry(lf, &session->files, node) {
			ser_file->token = lf->token;
			strscpy(ser_file->compatible, lf->compatible,
				sizeof(ser_file->compatible));
			ser_file->first_dep = nr_deps;
			ser_file->nr_deps = lf->nr_deps;
			lu_table_put_data(lu_table + l.data, &used, &lf->data,
					  &ser_file->data_offset,
					  &ser_file->data_size);
			/* Test hook: written wrong, before the checksum. */
			if (lu.rebooting)
				lu_memfd_debug_miswrite(lf, lu_table + l.data +
							ser_file->data_offset,
							ser_file->data_size);
			memcpy(ser_dep + nr_deps, lf->deps,
			       lf->nr_deps * sizeof(*ser_dep));
			nr_deps += lf->nr_deps;
			ser_file++;
			nr_files++;
			/* Test hook: damage after the file's checksums. */
			if (lu.rebooting) {
				lu_memfd_debug_damage(lf);
				lufs_debug_damage(lf);
			}
		}
		ser_session++;
		cond_resched();
	}
	list_for_each_entry(ss, &lu.subsystems, list) {
		if (!ss->prepared)
			continue;
		strscpy(ser_ss->name, ss->name, sizeof(ser_ss->name));
		lu_table_put_data(lu_table + l.data, &used, &ss->data,
				  &ser_ss->data_offset, &ser_ss->data_size);
		ser_ss++;
	}
	table->nr_sessions = nr_sessions;
	table->nr_files = nr_files;
	table->nr_deps = nr_deps;
	table->nr_subsystems = nr_ss;
	table->data_bytes = data_bytes;
	table->reserved = 0;
	lu_root->table_crc = lu_crc(lu_table, l.end, 0);
	/* Our own area: the walk cannot fail. */
	lu_vmalloc_read(&lu_table_kho, NULL, 0, &crc, &lu_root->list_crc, NULL,
			NULL, NULL);
	lu_root->table_bytes = l.end;
	lu_root->table = lu_table_kho;
	lu_info("handing over %u sessions with %u files, %u subsystems\n",
		nr_sessions, nr_files, nr_ss);
	/* Test hook: damage after the table's checksum, as in transit. */
	if (lu.rebooting)
		lu_debug_damage(lu_root, lu_table, l.data);
}

/**
 * lu_data_copy - keep a participant's data from the hand-over
 * @data: set to a copy of @size bytes at @from (nothing if @size is 0)
 * @from: the data, in the checked copy of the table
 * @size: its bytes
 *
 * Return: 0 or -ENOMEM.
 */
int lu_data_copy(struct lu_data *data, const void *from, u32 size)
{
	*data = (struct lu_data){};
	if (!size)
		return 0;
	data->ptr = kmemdup(from, size, GFP_KERNEL);
	if (!data->ptr)
		return -ENOMEM;
	data->size = size;
	return 0;
}

/**
 * lu_data_alloc - a participant's data buffer for the hand-over
 * @data: where the buffer goes; empty
 * @size: its bytes, 1 to LU_MAX_DATA
 *
 * Room in the table is reserved with it, so that the reboot notifier
 * copies it without allocating. lu_data_free() frees it.
 *
 * Return: the zeroed buffer, or ERR_PTR(-EINVAL, -EBUSY for a second
 * buffer, -ENOSPC, -ENOMEM).
 */
void *lu_data_alloc(struct lu_data *data, size_t size)
{
	void *buf;
	int err;

	lockdep_assert_held(&lu.lock);
	if (!size || size > LU_MAX_DATA)
		return ERR_PTR(-EINVAL);
	if (data->ptr)
		return ERR_PTR(-EBUSY);
	err = lu_kho_reserve(0, 0, 0, 0, lu_data_bytes(size));
	if (err)
		return ERR_PTR(err);
	buf = kzalloc(size, GFP_KERNEL);
	if (!buf)
		return ERR_PTR(-ENOMEM);
	data->ptr = buf;
	data->size = size;
	lu.nr_out_data_bytes += lu_data_bytes(size);
	return buf;
}

/**
 * lu_data_free - free a buffer from lu_data_alloc(), if any
 * @data: the buffer's holder; emptied
 */
void lu_data_free(struct lu_data *data)
{
	lockdep_assert_held(&lu.lock);
	if (!data->ptr)
		return;
	lu.nr_out_data_bytes -= lu_data_bytes(data->size);
	kfree(data->ptr);
	*data = (struct lu_data){};
}

/**
 * lu_kho_unpublish - make the next kernel see no session (CANCEL)
 */
void lu_kho_unpublish(void)
{
	lockdep_assert_held(&lu.lock);
	lu_root->table = (struct kho_vmalloc){};
	lu_root->table_bytes = 0;
	lu_root->table_crc = 0;
	lu_root->list_crc = 0;
}

static bool lu_name_valid(const u8 *name, size_t len)
{
	size_t n = strnlen(name, len);

	return n && n < len;
}

/* Whether an entry's data lies in the table's data area. */
static bool lu_data_valid(const struct lu_ser_table *table, u32 offset,
			  u32 size)
{
	return size <= LU_MAX_DATA && IS_ALIGNED(offset, 8) &&
	       offset <= table->data_bytes &&
	       size <= table->data_bytes - offset;
}

/*
 * Checks the table's shape before anything is built from it: sizes,
 * ranges, names. Session names and tokens (unique, dependencies before
 * their dependents) are checked while the sessions are built, through
 * the sessions' name index and each session's token index: O(n log n) in
 * all. @bytes holds at least the header (lu_kho_check_root()).
 */
static const char *lu_kho_check_table(const void *base, size_t bytes)
{
	const struct lu_ser_table *table = base;
	const struct lu_ser_session *sessions;
	const struct lu_ser_subsystem *subsystems;
	const struct lu_ser_file *files;
	struct lu_table_layout l;
	u32 i, j, next_file = 0;

	lu_table_layout_of(&l, table);
	if (l.end != bytes)
		return "table size does not match its counts";
	if (table->reserved)
		return "reserved field set";
	if (table->nr_subsystems > LU_MAX_SUBSYSTEMS)
		return "too many subsystems";
	sessions = base + l.sessions;
	files = base + l.files;
	subsystems = base + l.subsystems;
	for (i = 0; i < table->nr_sessions; i++) {
		const struct lu_ser_session *s = &sessions[i];

		if (!lu_name_valid(s->name, sizeof(s->name)))
			return "bad session name";
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
			if (!lu_data_valid(table, f->data_offset,
					   f->data_size))
				return "bad file data range";
		}
		next_file += s->nr_files;
		cond_resched();
	}
	if (next_file != table->nr_files)
		return "files outside any session";
	for (i = 0; i < table->nr_subsystems; i++) {
		if (!lu_name_valid(subsystems[i].name,
				   sizeof(subsystems[i].name)))
			return "bad subsystem name";
		if (!lu_data_valid(table, subsystems[i].data_offset,
				   subsystems[i].data_size))
			return "bad subsystem data range";
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
	const void *data;
	u32 i, j;
	int err;

	lu_table_layout_of(&l, table);
	sessions = base + l.sessions;
	file = base + l.files;
	deps = base + l.deps;
	subsystems = base + l.subsystems;
	data = base + l.data;
	for (i = 0; i < table->nr_sessions; i++) {
		err = lu_session_add_incoming(sessions[i].name, &session);
		if (err)
			return err;
		for (j = 0; j < sessions[i].nr_files; j++, file++) {
			err = lu_file_add_incoming(session, file->token,
						   file->compatible,
						   data + file->data_offset,
						   file->data_size,
						   deps + file->first_dep,
						   file->nr_deps);
			if (err)
				return err;
		}
		cond_resched();
	}
	if (!table->nr_subsystems)
		return 0;
	lu.in_subsystems = kcalloc(table->nr_subsystems,
				   sizeof(*lu.in_subsystems), GFP_KERNEL);
	if (!lu.in_subsystems)
		return -ENOMEM;
	lu.nr_in_subsystems = table->nr_subsystems;
	for (i = 0; i < table->nr_subsystems; i++) {
		struct lu_in_subsystem *in = &lu.in_subsystems[i];

		strscpy(in->name, subsystems[i].name, sizeof(in->name));
		err = lu_data_copy(&in->data, data + subsystems[i].data_offset,
				   subsystems[i].data_size);
		if (err)
			return err;
	}
	return 0;
}

/*
 * Checks the root's description of the table: why it is damaged, or
 * NULL.
 */
static const char *lu_kho_check_root(const struct lu_ser_root *root)
{
	if (root->reserved)
		return "reserved field set";
	if (root->table_bytes < sizeof(struct lu_ser_table) ||
	    root->table_bytes > LU_TABLE_MAX_BYTES ||
	    root->table.total_pages > LU_TABLE_MAX_BYTES >> PAGE_SHIFT)
		return "size out of range";
	return NULL;
}

/*
 * Copies the table, read in place, into @copy (root->table_bytes), and
 * checks both checksums and its shape. Nothing is restored: the previous
 * kernel's pages stay as they are. Return: why it is damaged, or NULL.
 */
static const char *lu_kho_copy_table(const struct lu_ser_root *root,
				     void *copy, void *bounce)
{
	u32 crc, list_crc;
	int err;

	err = lu_vmalloc_read(&root->table, copy, root->table_bytes, &crc,
			      &list_crc, bounce, NULL, NULL);
	if (err == -EFAULT)
		return "a page of it is not in RAM";
	if (err)
		return "its page list is cut short or too long";
	if (list_crc != root->list_crc)
		return "page list checksum mismatch";
	if (crc != root->table_crc)
		return "checksum mismatch";
	return lu_kho_check_table(copy, root->table_bytes);
}

/*
 * The root of what the previous kernel handed over, or NULL if there is
 * nothing (left) to take: no KHO boot, no subtree, taken by an earlier
 * load, or refused (one log line says why, and the root is marked taken).
 */
static struct lu_ser_root *lu_kho_incoming_root(void)
{
	struct lu_ser_root *root;
	phys_addr_t phys;
	size_t size;
	int err;

	if (!is_kho_boot())
		return NULL;
	err = kho_retrieve_subtree(LU_KHO_SUBTREE, &phys, &size);
	if (err == -ENOENT)
		return NULL;
	if (err) {
		pr_err("liveupdate: cannot read KHO subtree %s: %d\n",
		       LU_KHO_SUBTREE, err);
		return NULL;
	}
	if (size < offsetofend(struct lu_ser_root, version)) {
		pr_err("liveupdate: hand-over root too small (%zu bytes), ignored\n",
		       size);
		return NULL;
	}
	/* The root stays reserved memory; it is read and marked in place. */
	root = phys_to_virt(phys);
	if (root->magic == LU_KHO_MAGIC_CONSUMED) {
		lu_info("hand-over data already taken by an earlier load\n");
		return NULL;
	}
	if (root->magic != LU_KHO_MAGIC) {
		pr_err("liveupdate: hand-over root has bad magic %#llx, ignored\n",
		       root->magic);
		return NULL;
	}
	if (root->version != LU_KHO_VERSION) {
		pr_err("liveupdate: hand-over format version %u unsupported (this module reads %u), ignored\n",
		       root->version, LU_KHO_VERSION);
		return NULL;
	}
	if (size < sizeof(*root)) {
		pr_err("liveupdate: hand-over root too small (%zu bytes), ignored\n",
		       size);
		return NULL;
	}
	if (!root->table.first.phys) {
		lu_info("no session was handed over\n");
		root->magic = LU_KHO_MAGIC_CONSUMED;
		return NULL;
	}
	return root;
}

/* Where the table came from, between a load and its commit or abort. */
static struct lu_ser_root *lu_in_root;

/* What a builder's EBADMSG means; lu_kho_check_table() names the rest. */
static const char lu_build_refusal[] =
	"duplicate session name or token, or dependency out of order";

/* Forgets the sessions and subsystems lu_kho_build_incoming() built. */
static void lu_kho_forget_built(void)
{
	lockdep_assert_held(&lu.lock);
	lu_session_forget_incoming();
	lu_subsystems_release_incoming();
}

/**
 * lu_kho_load_incoming - read what the previous kernel handed over
 *
 * Builds the incoming sessions and subsystems from a checked copy of the
 * table; lu_kho_commit_incoming() or lu_kho_abort_incoming() ends the
 * load. Damaged data takes nothing over, with one log line, and is not
 * an error: the module still loads.
 *
 * A failing module load must lose nothing: until the commit nothing of
 * the previous kernel's is restored or changed, so a later load reads it
 * all again. No file data is touched here.
 *
 * Return: 0, or -ENOMEM: nothing was taken over, and a later load may
 * take it all.
 */
int lu_kho_load_incoming(void)
{
	struct lu_ser_root *root;
	void *copy = NULL;
	const char *why;
	int err;

	root = lu_kho_incoming_root();
	if (!root)
		return 0;
	why = lu_kho_check_root(root);
	if (!why) {
		void *bounce __free(kfree) = kmalloc(LU_READ_BOUNCE_SIZE,
						     GFP_KERNEL);

		copy = kvmalloc(root->table_bytes, GFP_KERNEL);
		if (!copy || !bounce) {
			kvfree(copy);
			return -ENOMEM;
		}
		why = lu_kho_copy_table(root, copy, bounce);
	}
	if (why) {
		pr_err("liveupdate: hand-over table rejected: %s\n", why);
		root->magic = LU_KHO_MAGIC_CONSUMED;
		kvfree(copy);
		return 0;
	}
	scoped_guard(mutex, &lu.lock)
		err = lu_kho_build_incoming(copy);
	kvfree(copy);
	if (err) {
		lu_kho_abort_incoming();
		if (err != -EBADMSG) {
			pr_err("liveupdate: cannot take over sessions now: %d; a later load will\n",
			       err);
			return err;
		}
		pr_err("liveupdate: hand-over table rejected: %s\n",
		       lu_build_refusal);
		root->magic = LU_KHO_MAGIC_CONSUMED;
		return 0;
	}
	lu_in_root = root;
	return 0;
}

/**
 * lu_kho_commit_incoming - the module loaded: the sessions are taken over
 *
 * The table's pages, copied at load, are given back.
 */
void lu_kho_commit_incoming(void)
{
	if (!lu_in_root)
		return;
	lu_in_root->magic = LU_KHO_MAGIC_CONSUMED;
	lu_vmalloc_release(&lu_in_root->table);
	lu_in_root = NULL;
	scoped_guard(mutex, &lu.lock) {
		lu_info("took over %u sessions with %u files, %u subsystems\n",
			lu.nr_in_sessions, lu.nr_in_files,
			lu.nr_in_subsystems);
		if (lu.nr_in_sessions || lu.nr_in_subsystems)
			lu.state = LIVEUPDATE_STATE_UPDATED;
	}
}

/**
 * lu_kho_abort_incoming - the module load failed: forget what was built
 *
 * The hand-over data itself is untouched, for the next load to take.
 */
void lu_kho_abort_incoming(void)
{
	guard(mutex)(&lu.lock);
	lu_kho_forget_built();
	lu_in_root = NULL;
}

#ifdef LU_DEBUG
/**
 * lu_kho_debug_table_page - test hook: a page the next kernel frees early
 *
 * Return: the first page of the hand-over table's page list, which the
 * next kernel gives back as soon as the module has taken the table over.
 */
phys_addr_t lu_kho_debug_table_page(void)
{
	return lu_table_kho.first.phys;
}

static const struct lu_debug_field lu_header_fields[] = {
	LU_DEBUG_FIELD("nr_sessions", lu_ser_table, nr_sessions),
	LU_DEBUG_FIELD("nr_files", lu_ser_table, nr_files),
	LU_DEBUG_FIELD("nr_deps", lu_ser_table, nr_deps),
	LU_DEBUG_FIELD("nr_subsystems", lu_ser_table, nr_subsystems),
	LU_DEBUG_FIELD("data_bytes", lu_ser_table, data_bytes),
	LU_DEBUG_FIELD("reserved", lu_ser_table, reserved),
	{}
};

static const struct lu_debug_field lu_session_fields[] = {
	LU_DEBUG_FIELD("name", lu_ser_session, name),
	LU_DEBUG_FIELD("first_file", lu_ser_session, first_file),
	LU_DEBUG_FIELD("nr_files", lu_ser_session, nr_files),
	{}
};

static const struct lu_debug_field lu_file_fields[] = {
	LU_DEBUG_FIELD("token", lu_ser_file, token),
	LU_DEBUG_FIELD("compatible", lu_ser_file, compatible),
	LU_DEBUG_FIELD("first_dep", lu_ser_file, first_dep),
	LU_DEBUG_FIELD("nr_deps", lu_ser_file, nr_deps),
	LU_DEBUG_FIELD("data_offset", lu_ser_file, data_offset),
	LU_DEBUG_FIELD("data_size", lu_ser_file, data_size),
	{}
};

static const struct lu_debug_field lu_dep_fields[] = {
	{ "token", 0, sizeof(u64) },
	{}
};

static const struct lu_debug_field lu_subsystem_fields[] = {
	LU_DEBUG_FIELD("name", lu_ser_subsystem, name),
	LU_DEBUG_FIELD("data_offset", lu_ser_subsystem, data_offset),
	LU_DEBUG_FIELD("data_size", lu_ser_subsystem, data_size),
	{}
};

/*
 * Finds ARRAY.FIELD@INDEX in a table: the field's bytes and, for INDEX >
 * 0, the same field of the entry before. Return: the field, or NULL.
 */
static const struct lu_debug_field *
lu_table_locate(void *table, const char *array, const char *field, u32 index,
		u8 **at, u8 **prev)
{
	const struct lu_ser_table *header = table;
	const struct lu_debug_field *f;
	struct lu_table_layout l;
	size_t start, entry;
	u32 count;

	lu_table_layout_of(&l, header);
	if (!strcmp(array, "table")) {
		f = lu_header_fields;
		start = 0;
		entry = sizeof(*header);
		count = 1;
	} else if (!strcmp(array, "session")) {
		f = lu_session_fields;
		start = l.sessions;
		entry = sizeof(struct lu_ser_session);
		count = header->nr_sessions;
	} else if (!strcmp(array, "file")) {
		f = lu_file_fields;
		start = l.files;
		entry = sizeof(struct lu_ser_file);
		count = header->nr_files;
	} else if (!strcmp(array, "dep")) {
		f = lu_dep_fields;
		start = l.deps;
		entry = sizeof(u64);
		count = header->nr_deps;
	} else if (!strcmp(array, "subsystem")) {
		f = lu_subsystem_fields;
		start = l.subsystems;
		entry = sizeof(struct lu_ser_subsystem);
		count = header->nr_subsystems;
	} else {
		return NULL;
	}
	f = lu_debug_field_named(f, field);
	if (!f || index >= count)
		return NULL;
	*at = table + start + index * entry + f->offset;
	*prev = index ? *at - entry : NULL;
	return f;
}

/**
 * lu_kho_debug_read_miswritten - test hook: read a miswritten table
 * @spec: ARRAY.FIELD@INDEX:KIND; ARRAY is table, session, file, dep or
 *        subsystem; KIND is zero, ones, flip (bit 0 of its first byte),
 *        prev (the same field of the entry before) or =VALUE
 *
 * Copies the table written at FREEZE, writes one field of the copy
 * wrong, and reads the copy with the next kernel's checks and builder,
 * then forgets what was built. The checksums do not matter here: this
 * proves the checks of the values, field by field, in one kernel.
 *
 * Return: 0 if the copy was taken, -EBADMSG if it was refused (one log
 * line says why), -EBUSY unless FROZEN with nothing incoming, -EINVAL
 * for a bad @spec, or -ENOMEM.
 */
int lu_kho_debug_read_miswritten(const char *spec)
{
	char buf[64], *field, *at_index, *kind;
	const struct lu_debug_field *f;
	u8 *at, *prev;
	const char *why;
	void *copy;
	u64 value;
	u32 index;
	int err;

	strscpy(buf, spec, sizeof(buf));
	strim(buf);
	field = strchr(buf, '.');
	at_index = field ? strchr(field, '@') : NULL;
	kind = at_index ? strchr(at_index, ':') : NULL;
	if (!kind)
		return -EINVAL;
	*field++ = 0;
	*at_index++ = 0;
	*kind++ = 0;
	if (kstrtou32(at_index, 0, &index))
		return -EINVAL;

	guard(mutex)(&lu.lock);
	if (lu.state != LIVEUPDATE_STATE_FROZEN || !lu_root->table_bytes ||
	    !list_empty(&lu.incoming) || lu.nr_in_subsystems)
		return -EBUSY;
	copy = kvmemdup(lu_table, lu_root->table_bytes, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	f = lu_table_locate(copy, buf, field, index, &at, &prev);
	if (!f) {
		kvfree(copy);
		return -EINVAL;
	}
	if (!strcmp(kind, "zero")) {
		memset(at, 0, f->size);
	} else if (!strcmp(kind, "ones")) {
		memset(at, 0xff, f->size);
	} else if (!strcmp(kind, "flip")) {
		lu_debug_write_field(at, f->size, 1, true);
	} else if (!strcmp(kind, "prev") && prev) {
		memcpy(at, prev, f->size);
	} else if (kind[0] == '=' && !kstrtou64(kind + 1, 0, &value)) {
		lu_debug_write_field(at, f->size, value, false);
	} else {
		kvfree(copy);
		return -EINVAL;
	}
	why = lu_kho_check_table(copy, lu_root->table_bytes);
	err = why ? -EBADMSG : lu_kho_build_incoming(copy);
	if (err == -EBADMSG && !why)
		why = lu_build_refusal;
	kvfree(copy);
	lu_kho_forget_built();
	if (err == -EBADMSG)
		pr_err("liveupdate: test: %s.%s@%u:%s: table rejected: %s\n",
		       buf, field, index, kind, why);
	return err;
}
#endif
