// SPDX-License-Identifier: GPL-2.0
/*
 * DOC: liveupdate memfd handler
 *
 * Carries shmem files without a name in the filesystem (memfds, O_TMPFILE
 * on tmpfs) using only exported symbols.
 *
 * Preserve (PRESERVE_FD): check the seals and the size, and freeze the
 * size (shmem refuses to grow or shrink a frozen mapping). Nothing is
 * pinned yet, so a preserved memfd costs nothing until an update starts.
 *
 * Prepare (PREPARE, while the workload runs): under the inode lock, find
 * the runs of pages that hold data (present and up to date, or swapped
 * out), pin them with memfd_pin_folios() (which swaps in and moves them
 * out of CMA, where KHO scratch memory lives), and preserve each folio
 * with KHO. Holes and fallocated-but-unwritten ranges are not preserved
 * and come back as holes. The folios stay in the file: later writes
 * within the size land in preserved memory.
 *
 * Freeze (FREEZE, and again in the reboot notifier): record the position
 * and the seals; pages written into holes since PREPARE are new folios,
 * so preserve them too. The published folio array is never changed in
 * place: a new array with the late folios merged in is built and
 * preserved first, then it replaces the old one in the header, and only
 * then is the old one unpreserved and freed. A failure at any step
 * releases the late folios and the new array, and the old array stays
 * published. The unfreeze step has nothing to undo: late pages stay with
 * the prepared ones.
 *
 * Retrieve (new kernel): the shmem internals that would insert the old
 * folios into a new file's page cache are not exported. So shmem puts a
 * placeholder folio at each index of a fresh shmem file (allocated,
 * charged and counted as any of its own), and the preserved folio takes
 * its place with replace_page_cache_folio(): the file holds the very
 * pages that were preserved. For large folios the placeholder must be of
 * the same order: a file whose records hold any lives on a tmpfs mount of
 * our own with huge=within_size, and the file grows folio by folio, so
 * that the size lets shmem choose each folio's own order. Where the orders
 * still differ (no THP here, shmem_enabled=deny, or a folio that ends an
 * aligned range whose start was a hole), the folio is copied, straight
 * into the folios shmem hands out (not through write(), which would obey
 * the caller's RLIMIT_FSIZE), and freed right after. The new file gets
 * the old one's name ("memfd:NAME"). The header, and the name after it,
 * are the file's data in liveupdate's table (lu_file_data_alloc()), so
 * the table's checksum covers them. Before anything is restored, the folio
 * records are read in place (every page checked to be RAM first) and
 * their checksum compared, so that KHO is only ever given addresses that
 * arrived intact; the copy then walks the array in place too, page by
 * page, through KHO's vmalloc ABI, so that nothing but our own
 * allocations can fail. A transient failure keeps
 * what was copied and the next retrieval resumes from there; damaged data
 * (-EIO) fails every retrieval, and finish frees what it can trust.
 */
#include <linux/bsearch.h>
#include <linux/dcache.h>
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/fs_context.h>
#include <linux/highmem.h>
#include <linux/io.h>
#include <linux/kexec_handover.h>
#include <linux/memcontrol.h>
#include <linux/mm.h>
#include <linux/mount.h>
#include <linux/pagemap.h>
#include <linux/sched.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/vmalloc.h>
#include <linux/xarray.h>

#include "lu_internal.h"

#define LU_MEMFD_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | \
			F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC)

/* Folios pinned per memfd_pin_folios() call. */
#define LU_PIN_BATCH	64

/**
 * struct lu_folio_array - folio records, sorted by index
 * @folios: vmalloc'ed array
 * @nr:     used entries
 * @cap:    allocated entries
 */
struct lu_folio_array {
	struct lu_ser_folio *folios;
	u64 nr;
	u64 cap;
};

/**
 * struct lu_memfd - a memfd's hand-over state, in either kernel
 * @ser:       the header: the file's data (lu_file.data), liveupdate's
 *             buffer in the old kernel and its checked copy in the new
 * @arr:       old kernel: the folio records, published in @ser once
 *             prepared, and never changed while published
 * @file:      new kernel: the file being rebuilt
 * @chunk:     new kernel: the page of the array's page list being read
 * @slot:      new kernel: the next entry of @chunk
 * @block:     new kernel: the page of folio records being read
 * @in_block:  new kernel: the next record of @block
 * @next:      new kernel: records read so far
 * @end:       new kernel: first page index after the last record read
 * @nr_blocks: new kernel: pages of records read so far
 * @pending:   new kernel: a restored folio not copied yet
 * @pending_index: new kernel: its index in the file
 * @max_order: new kernel: the largest folio order in the records
 * @name:      new kernel: the file's name, after @ser in its buffer
 * @name_len:  new kernel: its bytes (0: "memfd:", as data before names had)
 * @damaged:   new kernel: the records cannot be trusted from here on
 */
struct lu_memfd {
	struct lu_ser_memfd *ser;
	struct lu_folio_array arr;
	struct file *file;
	struct kho_vmalloc_chunk *chunk;
	unsigned int slot;
	struct lu_ser_folio *block;
	unsigned int in_block;
	u64 next;
	u64 end;
	u64 nr_blocks;
	struct folio *pending;
	pgoff_t pending_index;
	unsigned int max_order;
	const char *name;
	size_t name_len;
	bool damaged;
};

/* New kernel: the tmpfs for files that had large folios (lu_memfd_new_file()). */
static DEFINE_MUTEX(lu_memfd_huge_lock);
static struct vfsmount *lu_memfd_huge_mnt;

static bool lu_memfd_can_preserve(struct file *file)
{
	return shmem_file(file) && !file_inode(file)->i_nlink;
}

/* Two fds of one memfd are one object. */
static unsigned long lu_memfd_get_id(struct file *file)
{
	return (unsigned long)file_inode(file);
}

static unsigned long lu_ser_folio_pfn(const struct lu_ser_folio *f)
{
	return f->pfn_order >> LU_FOLIO_ORDER_BITS;
}

static struct folio *lu_ser_folio_folio(const struct lu_ser_folio *f)
{
	return pfn_folio(lu_ser_folio_pfn(f));
}

static unsigned int lu_ser_folio_order(const struct lu_ser_folio *f)
{
	return f->pfn_order & LU_FOLIO_ORDER_MASK;
}

/*
 * The folios preserved already, sorted by index, and a cursor that only
 * moves forward: FREEZE walks the file once and skips them without
 * pinning them again.
 */
struct lu_memfd_skip {
	const struct lu_folio_array *arr;
	u64 next;
};

static bool lu_memfd_skip(struct lu_memfd_skip *skip, pgoff_t index)
{
	const struct lu_folio_array *arr = skip->arr;

	if (!arr)
		return false;
	while (skip->next < arr->nr && arr->folios[skip->next].index < index)
		skip->next++;
	return skip->next < arr->nr && arr->folios[skip->next].index == index;
}

/*
 * Finds the next run of indices in [from, last] whose pages hold data
 * (folios that are up to date, or swap entries) and are not in @skip. The
 * result is a hint for memfd_pin_folios(), which takes the real references.
 */
static bool lu_memfd_next_run(struct address_space *mapping, pgoff_t from,
			      pgoff_t last, struct lu_memfd_skip *skip,
			      pgoff_t *start, pgoff_t *end)
{
	XA_STATE(xas, &mapping->i_pages, from);
	unsigned int scanned = 0;
	bool found = false;
	void *entry;

	rcu_read_lock();
	xas_for_each(&xas, entry, last) {
		pgoff_t nr, first;

		if (xas_retry(&xas, entry))
			continue;
		nr = 1UL << xas_get_order(&xas);
		first = max(round_down(xas.xa_index, nr), from);
		if ((!xa_is_value(entry) &&
		     !folio_test_uptodate((struct folio *)entry)) ||
		    lu_memfd_skip(skip, round_down(xas.xa_index, nr))) {
			if (found)
				break;
			/* Long stretches without new data: let others run. */
			if (!(++scanned % 4096)) {
				xas_pause(&xas);
				rcu_read_unlock();
				cond_resched();
				rcu_read_lock();
			}
			continue;
		}
		if (found && first != *end + 1)
			break;
		if (!found)
			*start = first;
		found = true;
		*end = min(round_down(xas.xa_index, nr) + nr - 1, last);
		/* Bound the time spent under RCU. */
		if (*end - *start >= 4096)
			break;
	}
	rcu_read_unlock();
	return found;
}

/* Grows an array that is not published. */
static int lu_folio_array_grow(struct lu_folio_array *arr)
{
	u64 cap = max_t(u64, 2 * arr->cap, PAGE_SIZE / sizeof(*arr->folios));
	struct lu_ser_folio *folios;

	folios = vmalloc_array(cap, sizeof(*folios));
	if (!folios)
		return -ENOMEM;
	if (arr->nr)
		memcpy(folios, arr->folios, arr->nr * sizeof(*folios));
	vfree(arr->folios);
	arr->folios = folios;
	arr->cap = cap;
	return 0;
}

/* Makes a fallocated folio that got into a run read as zeros. */
static void lu_memfd_zero_if_stale(struct folio *folio)
{
	folio_lock(folio);
	if (!folio_test_uptodate(folio)) {
		folio_zero_range(folio, 0, folio_size(folio));
		flush_dcache_folio(folio);
		folio_mark_uptodate(folio);
	}
	folio_unlock(folio);
}

static int lu_memfd_cmp_folio(const void *a, const void *b)
{
	u64 x = ((const struct lu_ser_folio *)a)->index;
	u64 y = ((const struct lu_ser_folio *)b)->index;

	return x < y ? -1 : x > y;
}

/* Whether @arr (sorted) holds @index. */
static bool lu_folio_array_has(const struct lu_folio_array *arr,
			       pgoff_t index)
{
	struct lu_ser_folio key = { .index = index };

	return arr && arr->nr &&
	       bsearch(&key, arr->folios, arr->nr, sizeof(*arr->folios),
		       lu_memfd_cmp_folio);
}

/*
 * Pins and preserves the folios of [start, end] that are not in @skip,
 * and adds them to @out.
 */
static int lu_memfd_preserve_run(struct file *file, struct lu_folio_array *out,
				 const struct lu_folio_array *skip,
				 pgoff_t start, pgoff_t end, loff_t size,
				 struct folio **batch)
{
	loff_t last_byte = min_t(loff_t, ((loff_t)end << PAGE_SHIFT) +
					 PAGE_SIZE, size) - 1;
	pgoff_t next = start;
	pgoff_t offset;
	long n, i;
	int err;

	while (next <= end) {
		n = memfd_pin_folios(file, (loff_t)next << PAGE_SHIFT,
				     last_byte, batch, LU_PIN_BATCH, &offset);
		if (n < 0)
			return n;
		if (!n)
			return -EIO;
		for (i = 0; i < n; i++) {
			struct folio *folio = batch[i];

			next = folio->index + folio_nr_pages(folio);
			if (lu_folio_array_has(skip, folio->index)) {
				unpin_folio(folio);
				continue;
			}
			if (out->nr == out->cap) {
				err = lu_folio_array_grow(out);
				if (err)
					goto err_unpin;
			}
			lu_memfd_zero_if_stale(folio);
			err = kho_preserve_folio(folio);
			if (err)
				goto err_unpin;
			out->folios[out->nr].index = folio->index;
			out->folios[out->nr].pfn_order =
				(folio_pfn(folio) << LU_FOLIO_ORDER_BITS) |
				folio_order(folio);
			out->nr++;
		}
		cond_resched();
	}
	return 0;

err_unpin:
	unpin_folios(batch + i, n - i);
	return err;
}

/* Unpreserves and unpins the folios of an unpublished array, frees it. */
static void lu_folio_array_release(struct lu_folio_array *arr)
{
	u64 i;

	for (i = 0; i < arr->nr; i++) {
		struct folio *folio = lu_ser_folio_folio(&arr->folios[i]);

		kho_unpreserve_folio(folio);
		unpin_folio(folio);
	}
	vfree(arr->folios);
	*arr = (struct lu_folio_array){};
}

/*
 * Preserves the data pages of @file that @skip lacks into @out. On
 * failure @out holds what was preserved; the caller releases it.
 */
static int lu_memfd_preserve_folios(struct file *file,
				    struct lu_folio_array *out,
				    const struct lu_folio_array *skip,
				    loff_t size)
{
	struct lu_memfd_skip cursor = { .arr = skip };
	struct folio **batch;
	pgoff_t from = 0, start, end, last;
	int err = 0;

	if (!size)
		return 0;
	batch = kmalloc_array(LU_PIN_BATCH, sizeof(*batch), GFP_KERNEL);
	if (!batch)
		return -ENOMEM;
	last = (size - 1) >> PAGE_SHIFT;
	while (from <= last &&
	       lu_memfd_next_run(file->f_mapping, from, last, &cursor, &start,
				 &end)) {
		err = lu_memfd_preserve_run(file, out, skip, start, end, size,
					    batch);
		if (err)
			break;
		if (end == last)
			break;
		from = end + 1;
		if (fatal_signal_pending(current)) {
			err = -EINTR;
			break;
		}
	}
	kfree(batch);
	return err;
}

/* PRESERVE_FD: check the file and fix its size; nothing goes to KHO yet. */
static int lu_memfd_preserve(struct lu_file *lf)
{
	struct inode *inode = file_inode(lf->file);
	struct lu_memfd *m;
	int err = 0;

	m = kzalloc_obj(*m, GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	inode_lock(inode);
	if (SHMEM_I(inode)->seals & ~LU_MEMFD_SEALS)
		err = -EOPNOTSUPP;
	else if (((u64)i_size_read(inode) >> PAGE_SHIFT) > UINT_MAX)
		err = -EFBIG;
	else
		shmem_freeze(inode, true);
	inode_unlock(inode);
	if (err) {
		kfree(m);
		return err;
	}
	lf->priv = m;
	return 0;
}

static void lu_memfd_unpreserve(struct lu_file *lf)
{
	struct inode *inode = file_inode(lf->file);

	inode_lock(inode);
	shmem_freeze(inode, false);
	inode_unlock(inode);
	kfree(lf->priv);
	lf->priv = NULL;
}

static u64 lu_folio_array_bytes(const struct lu_folio_array *arr)
{
	u64 i, bytes = 0;

	for (i = 0; i < arr->nr; i++)
		bytes += PAGE_SIZE << lu_ser_folio_order(&arr->folios[i]);
	return bytes;
}

/*
 * Preserves @arr's memory in KHO and names it in @desc. An empty array
 * is published as nothing.
 */
static int lu_folio_array_publish(const struct lu_folio_array *arr,
				  struct kho_vmalloc *desc)
{
	*desc = (struct kho_vmalloc){};
	return arr->nr ? kho_preserve_vmalloc(arr->folios, desc) : 0;
}

static void lu_folio_array_unpublish(const struct lu_folio_array *arr,
				     struct kho_vmalloc *desc)
{
	if (arr->nr)
		kho_unpreserve_vmalloc(desc);
	*desc = (struct kho_vmalloc){};
}

/* Undoes a successful lu_memfd_prepare(): back to preserved. */
static void lu_memfd_cancel(struct lu_file *lf)
{
	struct lu_memfd *m = lf->priv;

	lu_folio_array_unpublish(&m->arr, &m->ser->folios);
	lu_folio_array_release(&m->arr);
	m->ser = NULL;
}

/*
 * What may change after PREPARE and is recorded again at each freeze,
 * then the checksum of the published records. (liveupdate's table
 * checksum covers the header.)
 */
static void lu_memfd_record(struct lu_file *lf)
{
	struct lu_memfd *m = lf->priv;

	m->ser->pos = READ_ONCE(lf->file->f_pos);
	m->ser->seals = READ_ONCE(SHMEM_I(file_inode(lf->file))->seals);
	m->ser->records_crc = lu_crc(m->arr.folios,
				     m->arr.nr * sizeof(*m->arr.folios), 0);
}

/*
 * PREPARE: pin and preserve the pages that hold data, while the file is in
 * use, then publish the array. Later writes within the size land in these
 * same pages.
 */
static int lu_memfd_prepare(struct lu_file *lf)
{
	struct inode *inode = file_inode(lf->file);
	struct lu_memfd *m = lf->priv;
	struct name_snapshot name;
	size_t name_len;
	int err;

	/* The name follows the header ("memfd:NAME": readlink shows it). */
	take_dentry_name_snapshot(&name, file_dentry(lf->file));
	name_len = min_t(size_t, name.name.len, NAME_MAX);
	m->ser = lu_file_data_alloc(lf, sizeof(*m->ser) + name_len);
	if (!IS_ERR(m->ser))
		memcpy(m->ser + 1, name.name.name, name_len);
	release_dentry_name_snapshot(&name);
	if (IS_ERR(m->ser)) {
		err = PTR_ERR(m->ser);
		m->ser = NULL;
		return err;
	}
	inode_lock(inode);
	m->ser->size = i_size_read(inode);
	err = lu_memfd_preserve_folios(lf->file, &m->arr, NULL, m->ser->size);
	inode_unlock(inode);
	if (!err)
		err = lu_folio_array_publish(&m->arr, &m->ser->folios);
	if (err) {
		/* liveupdate frees the header with the failed prepare. */
		lu_folio_array_release(&m->arr);
		m->ser = NULL;
		return err;
	}
	m->ser->nr_folios = m->arr.nr;
	lu_memfd_record(lf);
	lf->bytes = lu_folio_array_bytes(&m->arr);
	return 0;
}

/* Merges two sorted arrays with distinct indices into a new one. */
static int lu_folio_array_merge(const struct lu_folio_array *a,
				const struct lu_folio_array *b,
				struct lu_folio_array *out)
{
	u64 i = 0, j = 0, k = 0;

	out->cap = a->nr + b->nr;
	out->folios = vmalloc_array(out->cap, sizeof(*out->folios));
	if (!out->folios)
		return -ENOMEM;
	while (i < a->nr || j < b->nr) {
		if (j == b->nr ||
		    (i < a->nr && a->folios[i].index < b->folios[j].index))
			out->folios[k++] = a->folios[i++];
		else
			out->folios[k++] = b->folios[j++];
	}
	out->nr = k;
	return 0;
}

/*
 * FREEZE (and the reboot notifier's second freeze): record the position
 * and seals, and carry pages written into holes since the last freeze.
 * Reserve (the late folios, the merged array, its KHO preservation),
 * then publish (the header names the new array), then retire the old
 * array. A failure undoes the reservations; the old array stays.
 */
static int lu_memfd_freeze(struct lu_file *lf)
{
	struct inode *inode = file_inode(lf->file);
	struct lu_folio_array late = {}, merged = {};
	struct lu_memfd *m = lf->priv;
	struct kho_vmalloc desc = {};
	int err;

	inode_lock(inode);
	err = lu_memfd_preserve_folios(lf->file, &late, &m->arr, m->ser->size);
	inode_unlock(inode);
	if (!err && late.nr)
		err = lu_folio_array_merge(&m->arr, &late, &merged);
	if (!err && late.nr)
		err = lu_folio_array_publish(&merged, &desc);
	if (err) {
		vfree(merged.folios);
		lu_folio_array_release(&late);
		return err;
	}
	if (late.nr) {
		lu_folio_array_unpublish(&m->arr, &m->ser->folios);
		m->ser->folios = desc;
		m->ser->nr_folios = merged.nr;
		vfree(m->arr.folios);
		m->arr = merged;
		lf->bytes += lu_folio_array_bytes(&late);
		vfree(late.folios);
	}
	lu_memfd_record(lf);
	return 0;
}

/* Largest i_size a memfd handed over may claim: what PRESERVE_FD allows. */
#define LU_MEMFD_MAX_PAGES	((u64)UINT_MAX + 1)
#define LU_RECORDS_PER_PAGE	(PAGE_SIZE / sizeof(struct lu_ser_folio))

/*
 * Checks the header before anything else is touched: size, seals,
 * position, and a folio array whose size matches its count. Return: why
 * it is damaged, or NULL.
 */
static const char *lu_memfd_check(const struct lu_ser_memfd *ser)
{
	u64 pages = DIV_ROUND_UP(ser->size, PAGE_SIZE);

	if (ser->size > MAX_LFS_FILESIZE || pages > LU_MEMFD_MAX_PAGES)
		return "size out of range";
	if (ser->seals & ~LU_MEMFD_SEALS)
		return "unknown seals";
	if (ser->pos > MAX_LFS_FILESIZE)
		return "position out of range";
	if (ser->nr_folios > pages)
		return "more folios than pages";
	if (ser->folios.total_pages !=
	    DIV_ROUND_UP(ser->nr_folios, LU_RECORDS_PER_PAGE) ||
	    ser->folios.order || (ser->nr_folios && !ser->folios.first.phys))
		return "folio array of the wrong shape";
	return NULL;
}

/* A name a dentry can have: no '/', no NUL. Return: why not, or NULL. */
static const char *lu_memfd_check_name(const char *name, size_t len)
{
	if (memchr(name, '/', len) || memchr(name, '\0', len))
		return "name with a slash or a NUL";
	return NULL;
}

/* Records the largest order among records read (lu_vmalloc_read()'s inspector). */
static void lu_memfd_note_orders(void *ctx, const void *bytes, size_t len)
{
	const struct lu_ser_folio *f = bytes;
	unsigned int *max_order = ctx;
	size_t i;

	for (i = 0; i < len / sizeof(*f); i++)
		*max_order = max(*max_order, lu_ser_folio_order(&f[i]));
}

/*
 * Reads the folio records in place (through copies: an address in a
 * damaged page list may name any page), each page of the array and of its
 * page list checked to be RAM first, and compares their checksum with
 * the header's. Only then may an address in them be given to KHO.
 * Return: why they are damaged, or NULL.
 */
static const char *lu_memfd_verify_records(const struct lu_ser_memfd *ser,
					   void *bounce, unsigned int *max_order)
{
	u32 crc;
	int err;

	err = lu_vmalloc_read(&ser->folios, NULL,
			      ser->nr_folios * sizeof(struct lu_ser_folio),
			      &crc, NULL, bounce, lu_memfd_note_orders,
			      max_order);
	if (err == -EFAULT)
		return "folio array page missing";
	if (err)
		return "folio array cut short";
	return crc == ser->records_crc ? NULL : "folio records checksum mismatch";
}

static void lu_memfd_damaged(struct lu_memfd *m, u64 token, const char *why)
{
	m->damaged = true;
	lu_err("memfd %llu: damaged hand-over data: %s\n", token, why);
}

static void lu_memfd_free_page(void *addr)
{
	if (addr)
		__free_page(virt_to_page(addr));
}

/*
 * New kernel: the next folio record, read from the preserved array in
 * place through KHO's vmalloc ABI (include/linux/kho/abi/), page by
 * page: restoring a page allocates nothing, so no allocation failure can
 * strand the array half restored (kho_restore_vmalloc() cannot be
 * retried once it has restored pages). Each page is freed once read.
 *
 * Return: 0 and the record in *@rec, -ENODATA after the last one, or
 * -EIO for damaged data (from then on, always).
 */
static int lu_memfd_next_record(struct lu_memfd *m, u64 token,
				const struct lu_ser_folio **rec)
{
	u64 pages = DIV_ROUND_UP(m->ser->size, PAGE_SIZE);
	const struct lu_ser_folio *f;
	struct page *page;
	phys_addr_t phys;

	if (m->damaged)
		return -EIO;
	if (m->next == m->ser->nr_folios)
		return -ENODATA;
	if (!m->block || m->in_block == LU_RECORDS_PER_PAGE) {
		lu_memfd_free_page(m->block);
		m->block = NULL;
		if (!m->chunk || m->slot == KHO_VMALLOC_SIZE ||
		    !m->chunk->phys[m->slot]) {
			phys = m->chunk ? m->chunk->hdr.next.phys :
					  m->ser->folios.first.phys;
			lu_memfd_free_page(m->chunk);
			m->chunk = NULL;
			page = phys ? kho_restore_pages(phys, 1) : NULL;
			if (!page) {
				lu_memfd_damaged(m, token, "folio array cut short");
				return -EIO;
			}
			m->chunk = page_address(page);
			m->slot = 0;
		}
		phys = m->chunk->phys[m->slot++];
		page = phys && m->nr_blocks < m->ser->folios.total_pages ?
		       kho_restore_pages(phys, 1) : NULL;
		if (!page) {
			lu_memfd_damaged(m, token, "folio array page missing");
			return -EIO;
		}
		m->block = page_address(page);
		m->in_block = 0;
		m->nr_blocks++;
	}
	f = &m->block[m->in_block++];
	if (lu_ser_folio_order(f) > MAX_PAGE_ORDER || f->index >= pages ||
	    !IS_ALIGNED(f->index, 1UL << lu_ser_folio_order(f)) ||
	    f->index < m->end) {
		lu_memfd_damaged(m, token, "bad, unsorted or overlapping folio");
		return -EIO;
	}
	m->end = f->index + (1UL << lu_ser_folio_order(f));
	m->next++;
	*rec = f;
	return 0;
}

/*
 * New kernel: checks the header (the file's data, which liveupdate
 * checked as part of its table) and the records, once. Damaged data
 * gives -EIO; the state stays in @lf->priv with no record to read, so
 * that finish leaves the folios, which cannot be trusted, reserved.
 */
static int lu_memfd_open_incoming(struct lu_file *lf)
{
	struct lu_memfd *m = lf->priv;
	const char *why;
	void *bounce;

	if (m)
		return 0;
	/* Both allocated before anything is decided: a failure changes nothing. */
	bounce = kmalloc(LU_READ_BOUNCE_SIZE, GFP_KERNEL);
	m = kzalloc_obj(*m, GFP_KERNEL);
	if (!bounce || !m) {
		kfree(bounce);
		kfree(m);
		return -ENOMEM;
	}
	m->ser = lf->data.ptr;
	lf->priv = m;
	if (lf->data.size < sizeof(*m->ser) ||
	    lf->data.size > sizeof(*m->ser) + NAME_MAX) {
		why = "header of the wrong size";
	} else {
		m->name = (const char *)(m->ser + 1);
		m->name_len = lf->data.size - sizeof(*m->ser);
		why = lu_memfd_check(m->ser) ?:
		      lu_memfd_check_name(m->name, m->name_len) ?:
		      lu_memfd_verify_records(m->ser, bounce, &m->max_order);
	}
	kfree(bounce);
	if (why) {
		lu_memfd_damaged(m, lf->token, why);
		return -EIO;
	}
	return 0;
}

/*
 * A tmpfs mount of our own with huge=within_size, made once, when a file
 * with large folios comes in: shmem then hands out a placeholder of a
 * folio's own order wherever the file's size covers it (see
 * lu_memfd_restore_folio()), whatever shm_mnt's policy in this kernel.
 * NULL where it cannot be made (no THP): such folios are copied.
 */
static struct vfsmount *lu_memfd_huge_mount(void)
{
	struct file_system_type *type;
	struct vfsmount *mnt = NULL;
	struct fs_context *fc;

	guard(mutex)(&lu_memfd_huge_lock);
	if (lu_memfd_huge_mnt)
		return lu_memfd_huge_mnt;
	/* tmpfs is built in: the type holds no module reference to drop. */
	type = get_fs_type("tmpfs");
	if (!type)
		return NULL;
	fc = fs_context_for_mount(type, SB_KERNMOUNT);
	if (IS_ERR(fc))
		return NULL;
	if (!vfs_parse_fs_string(fc, "source", "liveupdate") &&
	    !vfs_parse_fs_string(fc, "huge", "within_size"))
		mnt = fc_mount_longterm(fc);
	put_fs_context(fc);
	if (IS_ERR_OR_NULL(mnt)) {
		pr_info_ratelimited("liveupdate: no tmpfs with huge pages: large folios are copied\n");
		return NULL;
	}
	lu_memfd_huge_mnt = mnt;
	return mnt;
}

/* Module unload: files on the mount keep it alive until they are closed. */
void lu_memfd_exit(void)
{
	if (lu_memfd_huge_mnt)
		kern_unmount(lu_memfd_huge_mnt);
	lu_memfd_huge_mnt = NULL;
}

/*
 * The file starts empty and lu_memfd_restore_folio() grows it folio by
 * folio, so that shmem's huge=within_size (and a shmem_enabled=always of
 * this kernel) never makes a placeholder larger than the folio that
 * replaces it out of the size alone.
 */
static struct file *lu_memfd_new_file(const struct lu_memfd *m)
{
	vma_flags_t flags = mk_vma_flags(VMA_NORESERVE_BIT);
	struct vfsmount *mnt = m->max_order ? lu_memfd_huge_mount() : NULL;
	struct file *file;
	char *name;

	name = m->name_len ? kmemdup_nul(m->name, m->name_len, GFP_KERNEL) : NULL;
	if (m->name_len && !name)
		return ERR_PTR(-ENOMEM);
	if (mnt)
		file = shmem_file_setup_with_mnt(mnt, name ?: "memfd:", 0, flags);
	else
		file = shmem_file_setup(name ?: "memfd:", 0, flags);
	kfree(name);
	if (IS_ERR(file))
		return file;
	file->f_mode |= FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE;
	file->f_flags |= O_LARGEFILE;
	/* Sealing stays allowed until the old seals are put back. */
	SHMEM_I(file_inode(file))->seals = 0;
	return file;
}

/*
 * Puts the preserved folio itself into the new file in place of the
 * placeholder that shmem just allocated, charged and counted at its index
 * (shmem's own insertion is not exported), when both are of one order.
 * replace_page_cache_folio() moves the memcg charge and the NR_FILE_PAGES
 * and NR_SHMEM counts from the placeholder to the folio, as fuse does with
 * fresh folios; shmem's per-inode counts stay right, since the index stays
 * populated. The placeholder is new, so nobody has it mapped or looked it
 * up: it is freed when the caller drops it. A large folio also becomes
 * what shmem makes of its own (large_rmappable, which THP splitting and
 * migration look for), the page cache holds one reference per page (the
 * call moves one), and NR_SHMEM_THPS, counted by shmem when it added the
 * placeholder, moves with the rest (the nodes may differ). Return: false,
 * nothing changed, for folios of different orders: they are copied.
 */
static bool lu_memfd_adopt_folio(struct folio *placeholder, struct folio *old)
{
	long nr = folio_nr_pages(old);

	if (folio_test_uptodate(placeholder) ||
	    folio_order(placeholder) != folio_order(old))
		return false;
	__folio_set_locked(old);
	__folio_set_swapbacked(old);
	if (nr > 1)
		folio_set_large_rmappable(old);
	folio_mark_uptodate(old);
	replace_page_cache_folio(placeholder, old);
	if (nr > 1) {
		folio_ref_add(old, nr - 1);
		folio_put_refs(placeholder, nr - 1);
	}
	if (folio_test_pmd_mappable(old)) {
		lruvec_stat_mod_folio(placeholder, NR_SHMEM_THPS, -nr);
		lruvec_stat_mod_folio(old, NR_SHMEM_THPS, nr);
	}
	folio_mark_dirty(old);
	folio_add_lru(old);
	folio_unlock(old);
	/* The page cache took its own references. */
	folio_put(old);
	return true;
}

/*
 * Restores one preserved folio into the new file: the folio itself where
 * it can (lu_memfd_adopt_folio()), else a copy straight into the folios
 * that shmem allocates and accounts (no write(): no RLIMIT_FSIZE, no
 * signal), after which it is freed.
 */
static int lu_memfd_restore_folio(struct lu_memfd *m, struct folio *old,
				  pgoff_t index)
{
	struct inode *inode = file_inode(m->file);
	loff_t pos = (loff_t)index << PAGE_SHIFT;
	size_t len = min_t(u64, folio_size(old), m->ser->size - pos);
	size_t done = 0;
	int err;

	if (i_size_read(inode) < pos + len)
		i_size_write(inode, pos + len);
	while (done < len) {
		struct folio *new;
		size_t offset, n;

		err = shmem_get_folio(inode, (pos + done) >> PAGE_SHIFT,
				      pos + len, &new, SGP_WRITE);
		if (err)
			return err;
		if (!done && lu_memfd_adopt_folio(new, old)) {
			folio_unlock(new);
			folio_put(new);
			return 0;
		}
		offset = offset_in_folio(new, pos + done);
		n = min(len - done, folio_size(new) - offset);
		if (!folio_test_uptodate(new)) {
			folio_zero_range(new, 0, folio_size(new));
			folio_mark_uptodate(new);
		}
		memcpy_to_folio(new, offset, folio_address(old) + done, n);
		folio_mark_dirty(new);
		folio_unlock(new);
		folio_put(new);
		done += n;
	}
	folio_put(old);
	return 0;
}

/* Frees the pages of the folio array the walk still holds. */
static void lu_memfd_end_walk(struct lu_memfd *m)
{
	lu_memfd_free_page(m->block);
	lu_memfd_free_page(m->chunk);
	m->block = NULL;
	m->chunk = NULL;
}

static int lu_memfd_retrieve(struct lu_file *lf)
{
	const struct lu_ser_folio *rec;
	struct lu_memfd *m;
	int err;

	err = lu_memfd_open_incoming(lf);
	if (err)
		return err;
	m = lf->priv;
	if (!m->file) {
		m->file = lu_memfd_new_file(m);
		if (IS_ERR(m->file)) {
			err = PTR_ERR(m->file);
			m->file = NULL;
			return err;
		}
	}
	for (;;) {
		if (!m->pending) {
			err = lu_memfd_next_record(m, lf->token, &rec);
			if (err == -ENODATA)
				break;
			if (err)
				return err;
			m->pending = kho_restore_folio(PFN_PHYS(lu_ser_folio_pfn(rec)));
			if (!m->pending) {
				lu_memfd_damaged(m, lf->token, "folio not preserved");
				return -EIO;
			}
			m->pending_index = rec->index;
		}
		err = lu_memfd_restore_folio(m, m->pending, m->pending_index);
		if (err)
			return err;
		m->pending = NULL;
		cond_resched();
	}

	/* Writes are done: the size, the seals, and the file is handed over. */
	i_size_write(file_inode(m->file), m->ser->size);
	if (m->ser->seals & F_SEAL_WRITE)
		mapping_deny_writable(m->file->f_mapping);
	SHMEM_I(file_inode(m->file))->seals = m->ser->seals;
	vfs_setpos(m->file, m->ser->pos, MAX_LFS_FILESIZE);
	lf->file = m->file;
	lu_memfd_end_walk(m);
	kfree(m);
	lf->priv = NULL;
	return 0;
}

/*
 * End of the hand-over: free what was never retrieved, also after a
 * failed or partial retrieval. Folios past damaged data stay reserved.
 * Only opening the hand-over can fail (-ENOMEM), before anything is
 * freed.
 */
static int lu_memfd_finish(struct lu_file *lf, u64 *bytes)
{
	const struct lu_ser_folio *rec;
	struct lu_memfd *m;
	struct folio *folio;
	int err;

	if (lf->state == LU_FILE_RETRIEVED)
		return 0;
	err = lu_memfd_open_incoming(lf);
	if (err && err != -EIO)
		return err;
	m = lf->priv;
	if (!m)
		return 0;
	if (m->pending) {
		*bytes += folio_size(m->pending);
		folio_put(m->pending);
	}
	while (!lu_memfd_next_record(m, lf->token, &rec)) {
		folio = kho_restore_folio(PFN_PHYS(lu_ser_folio_pfn(rec)));
		if (folio) {
			*bytes += folio_size(folio);
			folio_put(folio);
		}
		cond_resched();
	}
	lu_memfd_end_walk(m);
	if (m->file)
		fput(m->file);
	kfree(m);
	lf->priv = NULL;
	return 0;
}

#ifdef LU_DEBUG
/**
 * lu_memfd_debug_damage - test hook: damage a memfd as if in transit
 * @lf: an outgoing file, frozen, its checksums written (others are left)
 *
 * Flips one bit of what the next kernel reads for @lf outside liveupdate's
 * table (whose own checksum covers the header), if the debug module's
 * test_damage_memfd names its token: bit numbers count through the folio
 * records, then the first page of the array's page list (its link, then
 * its page addresses).
 */
void lu_memfd_debug_damage(struct lu_file *lf)
{
	struct lu_memfd *m = lf->priv;
	u64 bit, byte, records;
	u8 *at;

	if (lf->handler != &lu_memfd_handler || !m || !m->ser ||
	    !lu_debug_damage_memfd_bit(lf->token, &bit))
		return;
	records = m->arr.nr * sizeof(struct lu_ser_folio);
	byte = bit / 8;
	if (byte < records)
		at = (u8 *)m->arr.folios + byte;
	else if (byte - records < PAGE_SIZE && m->ser->folios.first.phys)
		at = (u8 *)phys_to_virt(m->ser->folios.first.phys) +
		     byte - records;
	else
		return;
	*at ^= 1 << (bit % 8);
}

static const struct lu_debug_field lu_memfd_fields[] = {
	LU_DEBUG_FIELD("size", lu_ser_memfd, size),
	LU_DEBUG_FIELD("pos", lu_ser_memfd, pos),
	LU_DEBUG_FIELD("seals", lu_ser_memfd, seals),
	LU_DEBUG_FIELD("records_crc", lu_ser_memfd, records_crc),
	LU_DEBUG_FIELD("nr_folios", lu_ser_memfd, nr_folios),
	LU_DEBUG_FIELD("folios_pages", lu_ser_memfd, folios.total_pages),
	LU_DEBUG_FIELD("folios_order", lu_ser_memfd, folios.order),
	LU_DEBUG_FIELD("folios_first", lu_ser_memfd, folios.first.phys),
	/* The first byte of the name that follows the header. */
	{ "name", sizeof(struct lu_ser_memfd), 1 },
	{}
};

/**
 * lu_memfd_debug_miswrite - test hook: write a memfd's header wrong
 * @lf:   an outgoing file
 * @data: its header's copy in the table, before the table's checksum
 * @size: the copy's bytes
 *
 * Sets or XORs one field of the header as test_miswrite_memfd says for
 * @lf's token, as a faulty previous kernel would have written it: every
 * checksum is right, only the next kernel's checks of the values stand.
 */
void lu_memfd_debug_miswrite(struct lu_file *lf, void *data, u32 size)
{
	const struct lu_debug_field *f;
	char name[16];
	u64 value;
	bool xor;

	if (lf->handler != &lu_memfd_handler ||
	    size < sizeof(struct lu_ser_memfd) ||
	    !lu_debug_miswrite_memfd(lf->token, name, sizeof(name), &value,
				     &xor))
		return;
	f = lu_debug_field_named(lu_memfd_fields, name);
	if (f && f->offset + f->size <= size)
		lu_debug_write_field(data + f->offset, f->size, value, xor);
}
#endif

/* No owner: files of liveupdate's own handler need no module reference. */
struct lu_file_handler lu_memfd_handler = {
	.compatible = LU_MEMFD_COMPATIBLE,
	.can_preserve = lu_memfd_can_preserve,
	.get_id = lu_memfd_get_id,
	.preserve = lu_memfd_preserve,
	.unpreserve = lu_memfd_unpreserve,
	.prepare = lu_memfd_prepare,
	.cancel = lu_memfd_cancel,
	.freeze = lu_memfd_freeze,
	.retrieve = lu_memfd_retrieve,
	.finish = lu_memfd_finish,
};
