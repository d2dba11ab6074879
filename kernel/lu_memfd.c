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
 * our own with huge=within_size, and stays empty until the end, so that
 * shmem sizes each placeholder by the folio being restored. Where the
 * orders still differ (no THP here, shmem_enabled=deny, or a folio that
 * ends an aligned range whose start was a hole), the folio is copied,
 * straight into the folios shmem hands out (not through write(), which
 * would obey the caller's RLIMIT_FSIZE), and freed right after. The new
 * file gets the old one's name ("memfd:NAME"). The header, and the name
 * after it, are the file's data in liveupdate's table
 * (lu_file_data_alloc()), so the table's checksum covers them.
 *
 * Before anything is restored, the folio records are read in place
 * (every page checked to be RAM first) and their checksum compared, so
 * that KHO is only ever given addresses that arrived intact; then the
 * pages of records are restored and every record checked. The folios are
 * restored in ranges of records: a file of small folios is spread over
 * the CPUs, its ranges taken by workers that charge the retrieving task's
 * memory cgroup. Each range keeps its progress: a transient failure keeps
 * what was restored and the next retrieval resumes from there; damaged
 * data (-EIO) fails every retrieval, and finish frees what it can trust.
 */
#include <linux/atomic.h>
#include <linux/bsearch.h>
#include <linux/dcache.h>
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/folio_batch.h>
#include <linux/fs_context.h>
#include <linux/highmem.h>
#include <linux/io.h>
#include <linux/kexec_handover.h>
#include <linux/memcontrol.h>
#include <linux/mm.h>
#include <linux/mount.h>
#include <linux/pagemap.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "lu_internal.h"

#define LU_MEMFD_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | \
			F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC)

/* Folios pinned per memfd_pin_folios() call. */
#define LU_PIN_BATCH	64

#define LU_RECORDS_PER_PAGE	(PAGE_SIZE / sizeof(struct lu_ser_folio))

/*
 * The unit of work spread over CPUs: a range of records at retrieval (4
 * MiB of small pages), and the fewest pages per task at PREPARE; and the
 * most tasks one file keeps busy.
 */
#define LU_MEMFD_RANGE		(4 * LU_RECORDS_PER_PAGE)
#define LU_MEMFD_MAX_TASKS	16U

/* Tasks for @units units of LU_MEMFD_RANGE: one per CPU, at most. */
static unsigned int lu_memfd_nr_tasks(u64 units)
{
	return min3(num_online_cpus(), LU_MEMFD_MAX_TASKS,
		    (unsigned int)min_t(u64, units, UINT_MAX));
}

/**
 * struct lu_folio_array - folio records, sorted by index
 * @folios:    vmalloc'ed array
 * @nr:        used entries
 * @cap:       allocated entries
 * @pages:     pages in the folios of the used entries
 * @preserved: KHO preserves every folio of the array (else they are only
 *             pinned)
 */
struct lu_folio_array {
	struct lu_ser_folio *folios;
	u64 nr;
	u64 cap;
	u64 pages;
	bool preserved;
};

/**
 * struct lu_memfd_range - a retrieval's progress through a range of records
 * @done:    records of the range whose folios are in the new file
 * @pending: the folio of the next record, restored from KHO, not yet in
 *           the file (a transient failure left it there)
 */
struct lu_memfd_range {
	u64 done;
	struct folio *pending;
};

/**
 * struct lu_memfd - a memfd's hand-over state, in either kernel
 * @ser:       the header: the file's data (lu_file.data), liveupdate's
 *             buffer in the old kernel and its checked copy in the new
 * @arr:       old kernel: the folio records, published in @ser once
 *             prepared, and never changed while published
 * @file:      new kernel: the file being rebuilt
 * @blocks:    new kernel: the pages of folio records, restored from KHO,
 *             in order (lu_memfd_map_records())
 * @nr_blocks: new kernel: pages in @blocks
 * @nr_valid:  new kernel: records checked good, from the first on: all of
 *             them, unless damaged
 * @ranges:    new kernel: each range of LU_MEMFD_RANGE records' progress
 * @nr_ranges: new kernel: entries in @ranges
 * @max_order: new kernel: the largest folio order in the records
 * @name:      new kernel: the file's name, after @ser in its buffer
 * @name_len:  new kernel: its bytes (0: "memfd:", as data before names had)
 * @damaged:   new kernel: the records cannot be trusted past @nr_valid
 */
struct lu_memfd {
	struct lu_ser_memfd *ser;
	struct lu_folio_array arr;
	struct file *file;
	struct lu_ser_folio **blocks;
	u64 nr_blocks;
	u64 nr_valid;
	struct lu_memfd_range *ranges;
	u64 nr_ranges;
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

/* Grows an array that is not published to at least @want entries. */
static int lu_folio_array_grow(struct lu_folio_array *arr, u64 want)
{
	u64 cap = max3(2 * arr->cap, (u64)PAGE_SIZE / sizeof(*arr->folios),
		       want);
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

/* Pins the folios of [start, end] that are not in @skip, adds them to @out. */
static int lu_memfd_pin_run(struct file *file, struct lu_folio_array *out,
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
				err = lu_folio_array_grow(out, 0);
				if (err)
					goto err_unpin;
			}
			lu_memfd_zero_if_stale(folio);
			out->folios[out->nr].index = folio->index;
			out->folios[out->nr].pfn_order =
				(folio_pfn(folio) << LU_FOLIO_ORDER_BITS) |
				folio_order(folio);
			out->nr++;
			out->pages += folio_nr_pages(folio);
		}
		cond_resched();
	}
	return 0;

err_unpin:
	unpin_folios(batch + i, n - i);
	return err;
}

/*
 * Unpreserves (if preserved) and unpins the folios of an unpublished
 * array, frees it.
 */
static void lu_folio_array_release(struct lu_folio_array *arr)
{
	u64 i;

	for (i = 0; i < arr->nr; i++) {
		struct folio *folio = lu_ser_folio_folio(&arr->folios[i]);

		if (arr->preserved)
			kho_unpreserve_folio(folio);
		unpin_folio(folio);
	}
	vfree(arr->folios);
	*arr = (struct lu_folio_array){};
}

/*
 * Preserves in KHO every folio of @arr, pinned before: all or none. This
 * comes after all the pinning so that KHO's own allocations (its radix
 * tree) do not fall between the pages that pinning moves out of CMA: in
 * the next kernel, memblock reserves the preserved pages range by range,
 * each at a cost that grows with the ranges before it.
 */
static int lu_folio_array_preserve(struct lu_folio_array *arr)
{
	u64 i;
	int err;

	for (i = 0; i < arr->nr; i++) {
		struct folio *folio = lu_ser_folio_folio(&arr->folios[i]);

		err = lu_debug_fail_folio() ? -ENOMEM :
		      kho_preserve_folio(folio);
		if (err)
			goto err_unpreserve;
		if (!(i % 1024))
			cond_resched();
	}
	arr->preserved = true;
	return 0;

err_unpreserve:
	while (i--)
		kho_unpreserve_folio(lu_ser_folio_folio(&arr->folios[i]));
	return err;
}

/*
 * Pins the data pages of @file in [@first, @last] that @skip lacks into
 * @out, until *@stop (if given) says another task failed. On failure
 * @out holds what was pinned; the caller releases it.
 */
static int lu_memfd_pin_span(struct file *file, struct lu_folio_array *out,
			     const struct lu_folio_array *skip, loff_t size,
			     pgoff_t first, pgoff_t last, const int *stop)
{
	struct lu_memfd_skip cursor = { .arr = skip };
	struct folio **batch;
	pgoff_t from = first, start, end;
	int err = 0;

	if (!size)
		return 0;
	batch = kmalloc_array(LU_PIN_BATCH, sizeof(*batch), GFP_KERNEL);
	if (!batch)
		return -ENOMEM;
	last = min_t(pgoff_t, last, (size - 1) >> PAGE_SHIFT);
	while (from <= last &&
	       lu_memfd_next_run(file->f_mapping, from, last, &cursor, &start,
				 &end)) {
		err = lu_memfd_pin_run(file, out, skip, start, end, size,
				       batch);
		if (err)
			break;
		if (end == last)
			break;
		from = end + 1;
		if (fatal_signal_pending(current) || (stop && READ_ONCE(*stop))) {
			err = -EINTR;
			break;
		}
	}
	kfree(batch);
	return err;
}

/*
 * Pins and preserves the data pages of @file that @skip lacks, in the
 * caller's task. On failure @out holds what was pinned; the caller
 * releases it.
 */
static int lu_memfd_preserve_folios(struct file *file,
				    struct lu_folio_array *out,
				    const struct lu_folio_array *skip,
				    loff_t size)
{
	int err = lu_memfd_pin_span(file, out, skip, size, 0, ULONG_MAX,
				    NULL);

	return err ?: lu_folio_array_preserve(out);
}

/**
 * struct lu_memfd_slice - one task's share of a PREPARE's pinning
 * @work:  queued on the unbound workqueue (all but the caller's slice)
 * @file:  the memfd, its inode locked by the caller
 * @size:  its size
 * @first: the slice's first page index
 * @last:  its last page index
 * @arr:   what the slice pinned
 * @err:   the first failure among all slices, shared (0: none so far)
 */
struct lu_memfd_slice {
	struct work_struct work;
	struct file *file;
	loff_t size;
	pgoff_t first;
	pgoff_t last;
	struct lu_folio_array arr;
	int *err;
};

static void lu_memfd_slice_run(struct lu_memfd_slice *slice)
{
	int err = lu_memfd_pin_span(slice->file, &slice->arr, NULL,
				    slice->size, slice->first, slice->last,
				    slice->err);

	/* The first failure wins; the others see it and stop (-EINTR). */
	if (err)
		cmpxchg(slice->err, 0, err);
}

static void lu_memfd_slice_fn(struct work_struct *work)
{
	lu_memfd_slice_run(container_of(work, struct lu_memfd_slice, work));
}

/*
 * Whether @file's first folios are large (transparent huge pages). Pinning
 * those is mostly moving them out of CMA (a 2 MiB allocation and copy
 * each), which tasks in parallel only contend for: 4 GiB of 2 MiB folios
 * took 9.3-9.9 s to PREPARE with two tasks, 6.3-7.8 s with one.
 */
static bool lu_memfd_large_folios(struct file *file)
{
	struct folio_batch fbatch;
	pgoff_t index = 0;
	bool large = false;
	unsigned int i;

	folio_batch_init(&fbatch);
	filemap_get_folios(file->f_mapping, &index, ULONG_MAX, &fbatch);
	for (i = 0; i < folio_batch_count(&fbatch); i++)
		large |= folio_test_large(fbatch.folios[i]);
	folio_batch_release(&fbatch);
	return large;
}

/*
 * PREPARE's pinning and preserving of all of @file's data pages into
 * @out (empty): a file of small folios and of at least two ranges' worth
 * of pages is cut into equal spans of indices, one per CPU (the caller
 * takes the first), whose arrays are joined in order, then preserved.
 * Every array is allocated before the pinning, which moves pages out of
 * CMA: an array grown meanwhile and freed after would leave holes
 * between them (see lu_folio_array_preserve()). A file of large folios,
 * or without memory for the slices, is done by the caller alone. On
 * failure @out is empty and nothing is pinned or preserved.
 */
static int lu_memfd_preserve_all(struct file *file, struct lu_folio_array *out,
				 loff_t size)
{
	u64 pages = DIV_ROUND_UP(size, PAGE_SIZE), total = 0, span;
	u64 present = READ_ONCE(file->f_mapping->nrpages);
	struct lu_memfd_slice *slices = NULL;
	unsigned int nr, i;
	int err = 0;

	nr = lu_memfd_nr_tasks(pages / LU_MEMFD_RANGE);
	if (nr > 1 && !lu_memfd_large_folios(file))
		slices = kcalloc(nr, sizeof(*slices), GFP_KERNEL | __GFP_NOWARN);
	if (!slices)
		return lu_memfd_preserve_folios(file, out, NULL, size);
	span = DIV_ROUND_UP(pages, nr);
	for (i = 0; i < nr; i++) {
		slices[i] = (struct lu_memfd_slice){
			.file = file, .size = size, .first = i * span,
			.last = min((i + 1) * span, pages) - 1, .err = &err,
		};
		/* Room for every page of the span that is in memory. */
		if (!err)
			err = lu_folio_array_grow(&slices[i].arr,
						  min(span, present));
	}
	/* From here on, the slices share @err. */
	if (!err) {
		for (i = 1; i < nr; i++) {
			INIT_WORK(&slices[i].work, lu_memfd_slice_fn);
			queue_work(system_dfl_wq, &slices[i].work);
		}
		lu_memfd_slice_run(&slices[0]);
		for (i = 1; i < nr; i++)
			flush_work(&slices[i].work);
	}

	for (i = 0; i < nr; i++)
		total += slices[i].arr.nr;
	if (!err && total) {
		out->folios = vmalloc_array(total, sizeof(*out->folios));
		if (!out->folios)
			err = -ENOMEM;
	}
	for (i = 0; i < nr; i++) {
		struct lu_folio_array *arr = &slices[i].arr;

		if (err) {
			lu_folio_array_release(arr);
			continue;
		}
		if (arr->nr)
			memcpy(out->folios + out->nr, arr->folios,
			       arr->nr * sizeof(*arr->folios));
		out->nr += arr->nr;
		out->pages += arr->pages;
		vfree(arr->folios);
	}
	out->cap = out->nr;
	kfree(slices);
	if (!err)
		err = lu_folio_array_preserve(out);
	if (err)
		lu_folio_array_release(out);
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
	return arr->pages << PAGE_SHIFT;
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
	err = lu_memfd_preserve_all(lf->file, &m->arr, m->ser->size);
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

/*
 * Whether every page of the file, in memory or in swap, is one that @arr
 * carries. PRESERVE_FD froze the mapping (no truncation, no punched hole),
 * so pages written into holes since are the only ones that can add to
 * them, and the walk for them (which took 0.1 s per 4 GiB in the reboot
 * notifier's freeze) is needed only then. A page written meanwhile is
 * carried by the next freeze, or not at all after the last, either way.
 */
static bool lu_memfd_all_carried(struct inode *inode,
				 const struct lu_folio_array *arr)
{
	return READ_ONCE(inode->i_mapping->nrpages) == arr->pages &&
	       !READ_ONCE(SHMEM_I(inode)->swapped);
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
	out->pages = a->pages + b->pages;
	out->preserved = a->preserved && b->preserved;
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

	if (lu_memfd_all_carried(inode, &m->arr)) {
		lu_memfd_record(lf);
		return 0;
	}
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

/* What a walk of the folio array's page list failing with @err means. */
static const char *lu_memfd_array_damage(int err)
{
	if (err == -EFAULT)
		return "folio array page missing";
	return err ? "folio array cut short" : NULL;
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
	return lu_memfd_array_damage(err) ?:
	       (crc == ser->records_crc ? NULL : "folio records checksum mismatch");
}

static void lu_memfd_damaged(struct lu_memfd *m, const struct lu_file *lf,
			     const char *why)
{
	m->damaged = true;
	if (lf->handler == &lu_fs_file_handler)
		lu_err("instance %s: file %llu: damaged hand-over data: %s\n",
		       lf->session->name, lf->token, why);
	else
		lu_err("memfd %llu: damaged hand-over data: %s\n", lf->token,
		       why);
}

static struct lu_ser_folio *lu_memfd_record_at(const struct lu_memfd *m, u64 i)
{
	return &m->blocks[i / LU_RECORDS_PER_PAGE][i % LU_RECORDS_PER_PAGE];
}

/* Keeps a page of folio records, restored from KHO (lu_vmalloc_walk()). */
static int lu_memfd_map_block(void *ctx, phys_addr_t phys, const void *unused)
{
	struct lu_memfd *m = ctx;
	struct page *page = kho_restore_pages(phys, 1);

	if (!page)
		return -EFAULT;
	m->blocks[m->nr_blocks++] = page_address(page);
	return 0;
}

/*
 * New kernel: restores the pages of the folio records from KHO and
 * checks every record: in the file, aligned to its order, sorted, not
 * overlapping. Only the arrays that track them are allocated, first:
 * restoring a page allocates nothing, so no allocation failure can
 * strand the records half restored (kho_restore_vmalloc() cannot be
 * retried once it has restored pages).
 *
 * Return: 0; -ENOMEM, nothing changed; or -EIO for damaged data, with
 * the records up to the first damage in @m->nr_valid (finish frees their
 * folios, and leaves the rest reserved).
 */
static int lu_memfd_map_records(struct lu_memfd *m, const struct lu_file *lf)
{
	const struct lu_ser_memfd *ser = m->ser;
	u64 pages = DIV_ROUND_UP(ser->size, PAGE_SIZE);
	const struct lu_ser_folio *f;
	const char *why;
	u64 i, mapped, end = 0;
	int err;

	m->nr_ranges = DIV_ROUND_UP(ser->nr_folios, LU_MEMFD_RANGE);
	m->blocks = kvcalloc(ser->folios.total_pages, sizeof(*m->blocks),
			     GFP_KERNEL);
	m->ranges = kvcalloc(m->nr_ranges, sizeof(*m->ranges), GFP_KERNEL);
	if (!m->blocks || !m->ranges) {
		kvfree(m->blocks);
		kvfree(m->ranges);
		m->blocks = NULL;
		m->ranges = NULL;
		return -ENOMEM;
	}
	/* The page list was read once already: in place, freed as it goes. */
	err = lu_vmalloc_walk(&ser->folios, lu_memfd_map_block,
			      lu_vmalloc_free_page, m, NULL);
	why = lu_memfd_array_damage(err);
	/* Records in the pages that did arrive may still be freed. */
	mapped = min(ser->nr_folios, m->nr_blocks * LU_RECORDS_PER_PAGE);
	for (i = 0; i < mapped; i++) {
		f = lu_memfd_record_at(m, i);
		if (lu_ser_folio_order(f) > MAX_PAGE_ORDER || f->index >= pages ||
		    !IS_ALIGNED(f->index, 1UL << lu_ser_folio_order(f)) ||
		    f->index < end) {
			why = "bad, unsorted or overlapping folio";
			break;
		}
		end = f->index + (1UL << lu_ser_folio_order(f));
		if (!(i % LU_RECORDS_PER_PAGE))
			cond_resched();
	}
	m->nr_valid = i;
	if (why) {
		lu_memfd_damaged(m, lf, why);
		return -EIO;
	}
	return 0;
}

/*
 * New kernel: checks the header (the file's data, which liveupdate
 * checked as part of its table) and the records' checksum, once.
 * Damaged data gives -EIO; the state stays in @lf->priv with no record
 * to trust, so that finish leaves the folios reserved.
 */
static int lu_memfd_check_incoming(struct lu_file *lf)
{
	struct lu_memfd *m;
	const char *why;
	void *bounce;

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
		lu_memfd_damaged(m, lf, why);
		return -EIO;
	}
	return 0;
}

/* New kernel: the checked records, restored from KHO (or -ENOMEM, -EIO). */
static int lu_memfd_open_incoming(struct lu_file *lf)
{
	struct lu_memfd *m;
	int err;

	if (!lf->priv) {
		err = lu_memfd_check_incoming(lf);
		if (err)
			return err;
	}
	m = lf->priv;
	if (m->damaged)
		return -EIO;
	return m->blocks ? 0 : lu_memfd_map_records(m, lf);
}

/* Frees the new kernel's state: the record pages, and what tracks them. */
static void lu_memfd_free_incoming(struct lu_memfd *m)
{
	u64 i;

	for (i = 0; i < m->nr_blocks; i++)
		__free_page(virt_to_page(m->blocks[i]));
	kvfree(m->blocks);
	kvfree(m->ranges);
	kfree(m);
}

/*
 * A tmpfs mount of our own with huge=within_size, made once, when a file
 * with large folios comes in: shmem then hands out a placeholder of a
 * folio's own order wherever the folio's end covers it (see
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
 * The file stays empty (size 0) until every folio is in: on our
 * huge=within_size mount, shmem then sizes each placeholder by the end of
 * the folio being restored (shmem_get_folio()'s write_end), never larger
 * than that folio out of the file's size, and workers restoring ranges at
 * once need not agree on a size.
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

/**
 * struct lu_memfd_job - one retrieval of a memfd, spread over workers
 * @m:          the memfd
 * @memcg:      the retrieving task's memory cgroup: workers charge it too
 * @next_range: the next range of records a worker takes
 * @lock:       protects @err and @bad
 * @err:        the first failure; -EIO (damaged data) over any other
 * @bad:        the first record found damaged (U64_MAX: none)
 */
struct lu_memfd_job {
	struct lu_memfd *m;
	struct mem_cgroup *memcg;
	atomic64_t next_range;
	spinlock_t lock;
	int err;
	u64 bad;
};

struct lu_memfd_worker {
	struct work_struct work;
	struct lu_memfd_job *job;
};

/*
 * Restores the folios of one range of records into the new file, from
 * where an earlier attempt stopped. Return: 0, a transient errno (the
 * range keeps its progress), or -EIO with the damaged record in *@bad.
 */
static int lu_memfd_restore_range(struct lu_memfd *m, u64 r, u64 *bad)
{
	struct lu_memfd_range *range = &m->ranges[r];
	u64 first = r * LU_MEMFD_RANGE;
	u64 end = min(first + LU_MEMFD_RANGE, m->nr_valid);
	const struct lu_ser_folio *f;
	int err;

	while (first + range->done < end) {
		f = lu_memfd_record_at(m, first + range->done);
		if (!range->pending) {
			range->pending = kho_restore_folio(PFN_PHYS(lu_ser_folio_pfn(f)));
			if (!range->pending) {
				*bad = first + range->done;
				return -EIO;
			}
		}
		err = lu_debug_fail_folio() ? -ENOMEM :
		      lu_memfd_restore_folio(m, range->pending, f->index);
		if (err)
			return err;
		range->pending = NULL;
		range->done++;
		cond_resched();
	}
	return 0;
}

/* Takes ranges until none is left or a worker failed. */
static void lu_memfd_run_job(struct lu_memfd_job *job)
{
	struct mem_cgroup *old = set_active_memcg(job->memcg);
	u64 r, bad = U64_MAX;
	int err = 0;

	while (!READ_ONCE(job->err)) {
		r = atomic64_fetch_inc(&job->next_range);
		if (r >= job->m->nr_ranges)
			break;
		err = lu_memfd_restore_range(job->m, r, &bad);
		if (err)
			break;
	}
	set_active_memcg(old);
	if (!err)
		return;
	spin_lock(&job->lock);
	if (!job->err || err == -EIO)
		WRITE_ONCE(job->err, err);
	job->bad = min(job->bad, bad);
	spin_unlock(&job->lock);
}

static void lu_memfd_worker_fn(struct work_struct *work)
{
	lu_memfd_run_job(container_of(work, struct lu_memfd_worker, work)->job);
}

/*
 * Restores every record's folio into the new file. A file of small
 * folios with more than one range of records is spread over the CPUs,
 * the caller working too, each taking the next range. A file with large
 * folios stays in one task, in order: shmem sizes a placeholder by what
 * is empty around it, and a range that a slower worker has yet to fill
 * would give a placeholder too large to swap, so copied folios. Without
 * memory for the workers, the caller does it all.
 *
 * Return: 0, a transient errno (what was done stays done), or -EIO for a
 * folio KHO does not have, with @m->nr_valid cut to the records before it.
 */
static int lu_memfd_restore_all(struct lu_memfd *m)
{
	struct lu_memfd_job job = { .m = m, .bad = U64_MAX };
	struct lu_memfd_worker *workers = NULL;
	unsigned int nr = 0, i;

	if (!m->max_order && m->nr_ranges > 1)
		nr = lu_memfd_nr_tasks(m->nr_ranges) - 1;
	if (nr)
		workers = kcalloc(nr, sizeof(*workers), GFP_KERNEL | __GFP_NOWARN);
	if (!workers)
		nr = 0;
	spin_lock_init(&job.lock);
	atomic64_set(&job.next_range, 0);
	job.memcg = get_mem_cgroup_from_mm(current->mm);
	for (i = 0; i < nr; i++) {
		workers[i].job = &job;
		INIT_WORK(&workers[i].work, lu_memfd_worker_fn);
		queue_work(system_dfl_wq, &workers[i].work);
	}
	lu_memfd_run_job(&job);
	for (i = 0; i < nr; i++)
		flush_work(&workers[i].work);
	kfree(workers);
	mem_cgroup_put(job.memcg);
	if (job.err == -EIO)
		m->nr_valid = min(m->nr_valid, job.bad);
	return job.err;
}

/*
 * Restores @lf's folios into the file @new_file makes (empty, size 0),
 * then its size, seals and position. Return: 0, -EIO for damaged data,
 * or a transient error after which the next call resumes.
 */
static int lu_memfd_fill(struct lu_file *lf,
			 struct file *(*new_file)(struct lu_file *lf,
						  const struct lu_memfd *m))
{
	struct lu_memfd *m;
	int err;

	err = lu_memfd_open_incoming(lf);
	if (err)
		return err;
	m = lf->priv;
	if (!m->file) {
		m->file = new_file(lf, m);
		if (IS_ERR(m->file)) {
			err = PTR_ERR(m->file);
			m->file = NULL;
			return err;
		}
	}
	err = lu_memfd_restore_all(m);
	if (err == -EIO)
		lu_memfd_damaged(m, lf, "folio not preserved");
	if (err)
		return err;

	/* Writes are done: the size, the seals, and the file is handed over. */
	i_size_write(file_inode(m->file), m->ser->size);
	if (m->ser->seals & F_SEAL_WRITE)
		mapping_deny_writable(m->file->f_mapping);
	SHMEM_I(file_inode(m->file))->seals = m->ser->seals;
	vfs_setpos(m->file, m->ser->pos, MAX_LFS_FILESIZE);
	lf->file = m->file;
	lu_memfd_free_incoming(m);
	lf->priv = NULL;
	return 0;
}

static struct file *lu_memfd_new_memfd(struct lu_file *lf,
				       const struct lu_memfd *m)
{
	return lu_memfd_new_file(m);
}

static int lu_memfd_retrieve(struct lu_file *lf)
{
	return lu_memfd_fill(lf, lu_memfd_new_memfd);
}

/* The file's inode in its restored liveupdatefs instance (lu_fs.c). */
static struct file *lu_fs_file_target(struct lu_file *lf,
				      const struct lu_memfd *m)
{
	struct file *file = lufs_restored_file(lf);

	if (!IS_ERR(file) && i_size_read(file_inode(file))) {
		fput(file);
		return ERR_PTR(-EEXIST);
	}
	return file;
}

static int lu_fs_file_retrieve(struct lu_file *lf)
{
	return lu_memfd_fill(lf, lu_fs_file_target);
}

/*
 * End of the hand-over: free what was never retrieved, also after a
 * failed or partial retrieval. Folios past damaged data stay reserved.
 * Only opening the hand-over can fail (-ENOMEM), before anything is
 * freed.
 */
static int lu_memfd_finish(struct lu_file *lf, u64 *bytes)
{
	struct lu_memfd_range *range;
	struct lu_memfd *m;
	struct folio *folio;
	u64 r, i, end;
	int err;

	if (lf->state == LU_FILE_RETRIEVED)
		return 0;
	err = lu_memfd_open_incoming(lf);
	if (err && err != -EIO)
		return err;
	m = lf->priv;
	if (!m)
		return 0;
	for (r = 0; m->ranges && r < m->nr_ranges; r++) {
		range = &m->ranges[r];
		if (range->pending) {
			*bytes += folio_size(range->pending);
			folio_put(range->pending);
		}
		end = min((r + 1) * LU_MEMFD_RANGE, m->nr_valid);
		for (i = r * LU_MEMFD_RANGE + range->done; i < end; i++) {
			folio = kho_restore_folio(PFN_PHYS(lu_ser_folio_pfn(lu_memfd_record_at(m, i))));
			if (folio) {
				*bytes += folio_size(folio);
				folio_put(folio);
			}
			cond_resched();
		}
	}
	if (m->file)
		fput(m->file);
	lu_memfd_free_incoming(m);
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

	if ((lf->handler != &lu_memfd_handler &&
	     lf->handler != &lu_fs_file_handler) || !m || !m->ser ||
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

	if ((lf->handler != &lu_memfd_handler &&
	     lf->handler != &lu_fs_file_handler) ||
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

static bool lu_fs_file_can_preserve(struct file *file)
{
	return false;
}

/*
 * A regular file of a liveupdatefs instance: a memfd's data, restored
 * into the file of the same token in the restored instance. Preserved by
 * lu_fs.c at PREPARE, never by fd.
 */
struct lu_file_handler lu_fs_file_handler = {
	.compatible = LU_FS_FILE_COMPATIBLE,
	.can_preserve = lu_fs_file_can_preserve,
	.get_id = lu_memfd_get_id,
	.preserve = lu_memfd_preserve,
	.unpreserve = lu_memfd_unpreserve,
	.prepare = lu_memfd_prepare,
	.cancel = lu_memfd_cancel,
	.freeze = lu_memfd_freeze,
	.retrieve = lu_fs_file_retrieve,
	.finish = lu_memfd_finish,
};
