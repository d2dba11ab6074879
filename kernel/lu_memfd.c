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
 * Freeze (FREEZE): record the position; pages written into holes since
 * PREPARE are new folios, so preserve them too. The unfreeze step has
 * nothing to undo: late pages stay with the prepared ones.
 *
 * Retrieve (new kernel): the shmem internals that would insert the old
 * folios into a new file's page cache are not exported, so the data is
 * copied into a fresh shmem file, folio by folio, and each old folio is
 * freed right after its copy. A failure keeps what was copied and the
 * next retrieval resumes from there.
 */
#include <linux/bsearch.h>
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/highmem.h>
#include <linux/io.h>
#include <linux/kexec_handover.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/sched.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/vmalloc.h>
#include <linux/xarray.h>

#include "lu_internal.h"

#define LU_MEMFD_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | \
			F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC)

/* Folios pinned per memfd_pin_folios() call. */
#define LU_PIN_BATCH	64

/**
 * struct lu_memfd - a memfd's hand-over state, in either kernel
 * @ser:     the preserved header (lu_file.data points at it)
 * @folios:  the folio array, vmalloc'ed
 * @nr:      used entries of @folios
 * @cap:     allocated entries of @folios (old kernel)
 * @published: the array is preserved in KHO and named by @ser
 * @file:    new kernel: the file being rebuilt
 * @next:    new kernel: first entry not yet copied
 * @pending: new kernel: a restored folio whose copy failed
 */
struct lu_memfd {
	struct lu_ser_memfd *ser;
	struct lu_ser_folio *folios;
	u64 nr;
	u64 cap;
	bool published;
	struct file *file;
	u64 next;
	struct folio *pending;
};

static bool lu_memfd_can_preserve(struct file *file)
{
	return shmem_file(file) && !file_inode(file)->i_nlink;
}

/* Two fds of one memfd are one object. */
static unsigned long lu_memfd_get_id(struct file *file)
{
	return (unsigned long)file_inode(file);
}

static struct folio *lu_ser_folio_folio(const struct lu_ser_folio *f)
{
	return pfn_folio(f->pfn_order >> LU_FOLIO_ORDER_BITS);
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
	const struct lu_memfd *m;	/* its array may be reallocated */
	u64 nr;
	u64 next;
};

static bool lu_memfd_skip(struct lu_memfd_skip *skip, pgoff_t index)
{
	const struct lu_ser_folio *folios = skip->m->folios;

	while (skip->next < skip->nr && folios[skip->next].index < index)
		skip->next++;
	return skip->next < skip->nr && folios[skip->next].index == index;
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

static int lu_memfd_grow(struct lu_memfd *m)
{
	u64 cap = max_t(u64, 2 * m->cap, PAGE_SIZE / sizeof(*m->folios));
	struct lu_ser_folio *folios;

	folios = vmalloc_array(cap, sizeof(*folios));
	if (!folios)
		return -ENOMEM;
	if (m->nr)
		memcpy(folios, m->folios, m->nr * sizeof(*folios));
	vfree(m->folios);
	m->folios = folios;
	m->cap = cap;
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

/* Whether the first @nr_old (sorted) entries of @m hold @index. */
static bool lu_memfd_has(struct lu_memfd *m, u64 nr_old, pgoff_t index)
{
	struct lu_ser_folio key = { .index = index };

	return nr_old && bsearch(&key, m->folios, nr_old, sizeof(*m->folios),
				 lu_memfd_cmp_folio);
}

/*
 * Pins and preserves the folios of [start, end] that are not among the
 * first @nr_old entries of @m, and adds them to @m.
 */
static int lu_memfd_preserve_run(struct file *file, struct lu_memfd *m,
				 u64 nr_old, pgoff_t start, pgoff_t end,
				 loff_t size, struct folio **batch)
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
			if (lu_memfd_has(m, nr_old, folio->index)) {
				unpin_folio(folio);
				continue;
			}
			if (m->nr == m->cap) {
				err = lu_memfd_grow(m);
				if (err)
					goto err_unpin;
			}
			lu_memfd_zero_if_stale(folio);
			err = kho_preserve_folio(folio);
			if (err)
				goto err_unpin;
			m->folios[m->nr].index = folio->index;
			m->folios[m->nr].pfn_order =
				(folio_pfn(folio) << LU_FOLIO_ORDER_BITS) |
				folio_order(folio);
			m->nr++;
		}
		cond_resched();
	}
	return 0;

err_unpin:
	unpin_folios(batch + i, n - i);
	return err;
}

static void lu_memfd_release_folios(struct lu_memfd *m)
{
	u64 i;

	for (i = 0; i < m->nr; i++) {
		struct folio *folio = lu_ser_folio_folio(&m->folios[i]);

		kho_unpreserve_folio(folio);
		unpin_folio(folio);
	}
	vfree(m->folios);
}

/* Preserves the data pages of @file that the first @nr_old entries lack. */
static int lu_memfd_preserve_folios(struct file *file, struct lu_memfd *m,
				    u64 nr_old, loff_t size)
{
	struct lu_memfd_skip skip = { .m = m, .nr = nr_old };
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
	       lu_memfd_next_run(file->f_mapping, from, last, &skip, &start,
				 &end)) {
		err = lu_memfd_preserve_run(file, m, nr_old, start, end, size,
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

static u64 lu_memfd_bytes(struct lu_memfd *m)
{
	u64 i, bytes = 0;

	for (i = 0; i < m->nr; i++)
		bytes += PAGE_SIZE << lu_ser_folio_order(&m->folios[i]);
	return bytes;
}

/* Publishes the folio array; on failure the array is not in KHO. */
static int lu_memfd_publish(struct lu_file *lf)
{
	struct lu_memfd *m = lf->priv;
	int err = 0;

	if (m->nr)
		err = kho_preserve_vmalloc(m->folios, &m->ser->folios);
	m->published = !err;
	m->ser->nr_folios = err ? 0 : m->nr;
	lf->bytes = lu_memfd_bytes(m);
	return err;
}

static void lu_memfd_unpublish(struct lu_memfd *m)
{
	if (m->published && m->nr)
		kho_unpreserve_vmalloc(&m->ser->folios);
	m->published = false;
}

static void lu_memfd_cancel(struct lu_file *lf)
{
	struct lu_memfd *m = lf->priv;

	lu_memfd_unpublish(m);
	lu_memfd_release_folios(m);
	kho_unpreserve_free(m->ser);
	m->ser = NULL;
	m->folios = NULL;
	m->nr = 0;
	m->cap = 0;
}

/*
 * PREPARE: pin and preserve the pages that hold data, while the file is in
 * use. Later writes within the size land in these same pages.
 */
static int lu_memfd_prepare(struct lu_file *lf)
{
	struct inode *inode = file_inode(lf->file);
	struct lu_memfd *m = lf->priv;
	int err;

	m->ser = kho_alloc_preserve(sizeof(*m->ser));
	if (IS_ERR(m->ser)) {
		err = PTR_ERR(m->ser);
		m->ser = NULL;
		return err;
	}
	inode_lock(inode);
	m->ser->size = i_size_read(inode);
	m->ser->seals = SHMEM_I(inode)->seals;
	err = lu_memfd_preserve_folios(lf->file, m, 0, m->ser->size);
	inode_unlock(inode);
	if (!err)
		err = lu_memfd_publish(lf);
	if (err) {
		lu_memfd_cancel(lf);
		return err;
	}
	lf->data = virt_to_phys(m->ser);
	return 0;
}

/*
 * FREEZE: record the position, and preserve pages written into holes
 * since PREPARE (they are new folios), republishing the sorted array.
 * On failure the late pages stay with the prepared ones and CANCEL (or
 * the reboot notifier's drop) releases them all.
 */
static int lu_memfd_freeze(struct lu_file *lf)
{
	struct inode *inode = file_inode(lf->file);
	struct lu_memfd *m = lf->priv;
	u64 nr_old = m->nr;
	int err;

	m->ser->pos = READ_ONCE(lf->file->f_pos);
	inode_lock(inode);
	err = lu_memfd_preserve_folios(lf->file, m, nr_old, m->ser->size);
	inode_unlock(inode);
	if (m->nr == nr_old)
		return err;
	sort(m->folios, m->nr, sizeof(*m->folios), lu_memfd_cmp_folio, NULL);
	lu_memfd_unpublish(m);
	return lu_memfd_publish(lf) ?: err;
}

/* New kernel: takes the header and the folio array out of KHO, once. */
static int lu_memfd_open_incoming(struct lu_file *lf)
{
	struct lu_memfd *m = lf->priv;
	struct folio *folio;
	u64 i, pages;

	if (m)
		return 0;
	m = kzalloc_obj(*m, GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	folio = kho_restore_folio(lf->data);
	if (!folio) {
		kfree(m);
		lu_err("memfd %llu: header not preserved\n", lf->token);
		return -EIO;
	}
	m->ser = folio_address(folio);
	m->nr = m->ser->nr_folios;
	lf->priv = m;
	if (!m->nr)
		return 0;

	if (m->nr > m->ser->folios.total_pages * (PAGE_SIZE / sizeof(*m->folios)))
		goto bad;
	m->folios = kho_restore_vmalloc(&m->ser->folios);
	if (!m->folios)
		goto bad;
	pages = DIV_ROUND_UP(m->ser->size, PAGE_SIZE);
	for (i = 0; i < m->nr; i++) {
		const struct lu_ser_folio *f = &m->folios[i];
		unsigned int order = lu_ser_folio_order(f);

		if (order > MAX_PAGE_ORDER || f->index >= pages ||
		    (i && f->index <= m->folios[i - 1].index))
			goto bad;
	}
	return 0;

bad:
	lu_err("memfd %llu: damaged folio array\n", lf->token);
	m->nr = 0;
	return -EIO;
}

static struct file *lu_memfd_new_file(const struct lu_ser_memfd *ser)
{
	struct file *file;

	file = shmem_file_setup("memfd:", ser->size,
				mk_vma_flags(VMA_NORESERVE_BIT));
	if (IS_ERR(file))
		return file;
	file->f_mode |= FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE;
	file->f_flags |= O_LARGEFILE;
	/* Sealing stays allowed until the old seals are put back. */
	SHMEM_I(file_inode(file))->seals = 0;
	return file;
}

/* Copies one preserved folio into the new file and frees it. */
static int lu_memfd_copy_folio(struct lu_memfd *m, struct folio *folio,
			       pgoff_t index)
{
	loff_t pos = (loff_t)index << PAGE_SHIFT;
	size_t len = min_t(u64, folio_size(folio), m->ser->size - pos);
	ssize_t written;

	written = kernel_write(m->file, folio_address(folio), len, &pos);
	if (written != len)
		return written < 0 ? written : -ENOSPC;
	folio_put(folio);
	return 0;
}

static int lu_memfd_retrieve(struct lu_file *lf)
{
	struct lu_memfd *m;
	int err;

	err = lu_memfd_open_incoming(lf);
	if (err)
		return err;
	m = lf->priv;
	if (!m->file) {
		m->file = lu_memfd_new_file(m->ser);
		if (IS_ERR(m->file)) {
			err = PTR_ERR(m->file);
			m->file = NULL;
			return err;
		}
	}
	for (; m->next < m->nr; m->next++) {
		const struct lu_ser_folio *f = &m->folios[m->next];
		struct folio *folio = m->pending;

		if (!folio)
			folio = kho_restore_folio(PFN_PHYS(f->pfn_order >>
							   LU_FOLIO_ORDER_BITS));
		if (!folio) {
			lu_err("memfd %llu: folio %llu not preserved\n",
			       lf->token, f->index);
			return -EIO;
		}
		m->pending = folio;
		err = lu_memfd_copy_folio(m, folio, f->index);
		if (err)
			return err;
		m->pending = NULL;
		cond_resched();
	}

	/* Writes are done: put the seals back and hand the file over. */
	if (m->ser->seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		mapping_deny_writable(m->file->f_mapping);
	SHMEM_I(file_inode(m->file))->seals = m->ser->seals;
	m->file->f_pos = m->ser->pos;
	lf->file = m->file;
	vfree(m->folios);
	folio_put(virt_to_folio(m->ser));
	kfree(m);
	lf->priv = NULL;
	return 0;
}

/* End of the hand-over: free what was never retrieved. */
static u64 lu_memfd_finish(struct lu_file *lf)
{
	struct lu_memfd *m;
	struct folio *folio;
	u64 bytes = 0;

	if (lf->file || lu_memfd_open_incoming(lf))
		return 0;
	m = lf->priv;
	if (m->pending) {
		folio_put(m->pending);
		m->next++;
	}
	for (; m->next < m->nr; m->next++) {
		folio = kho_restore_folio(PFN_PHYS(m->folios[m->next].pfn_order >>
						   LU_FOLIO_ORDER_BITS));
		if (folio) {
			bytes += folio_size(folio);
			folio_put(folio);
		}
	}
	if (m->file)
		fput(m->file);
	vfree(m->folios);
	folio_put(virt_to_folio(m->ser));
	kfree(m);
	lf->priv = NULL;
	return bytes;
}

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
