/* SPDX-License-Identifier: GPL-2.0 */
/*
 * DOC: liveupdate's hand-over format
 *
 * What one kernel leaves for the next in Kexec HandOver (KHO) memory. All
 * structures are little-endian as the machine is, packed by their natural
 * alignment, and hold physical addresses (never pointers). The subtree name
 * is LU_KHO_SUBTREE; it must never be "LUO": a successor kernel built with
 * mainline's LUO parses that name itself.
 *
 * Root (LU_KHO_SUBTREE's blob, one page, preserved from module load on):
 *   struct lu_ser_root. @table is 0 until the kexec reboot notifier has
 *   written the table; a root with @table == 0 carries no session.
 *
 * Checksums: nothing the previous kernel wrote is trusted before it is
 *   checked, and no address is given to KHO (whose restore functions WARN
 *   on memory that was not preserved) or followed before the checksum
 *   covering it matched. The root holds the CRC32 of the table's used
 *   bytes, which cover every session and file record and each file's data
 *   address; the table is read in place (each page checked to be RAM) and
 *   restored only once it matches. A memfd header holds the CRC32 of its
 *   own fields and of its folio records, which are read in place the same
 *   way before any folio is restored. Policy: a damaged root or table
 *   takes nothing over (all or nothing); a damaged memfd fails alone
 *   (-EIO on every retrieval), its folios stay reserved, and the rest of
 *   its session is retrieved as usual.
 *
 * Table (one block from kho_alloc_preserve, grown when sessions, files
 *   or subsystems are added, filled at FREEZE and by the reboot notifier):
 *   struct lu_ser_table, then @nr_sessions struct lu_ser_session, then
 *   @nr_files struct lu_ser_file, then @nr_deps __u64 tokens, then
 *   @nr_subsystems struct lu_ser_subsystem. Session i owns files
 *   [first_file, first_file + nr_files); file j depends on the tokens
 *   [first_dep, first_dep + nr_deps), all in its own session. A session's
 *   files come in dependency order: a file's dependencies before it.
 *
 * File data: each file entry names its handler by @compatible and points
 *   to the handler's own block, whose format the handler defines (memfd
 *   below). A handler that is not registered when the table is read may
 *   register later; its files wait.
 *
 * Subsystem data: one physical address per subsystem, defined by it.
 *
 * memfd ("memfd-v1"): struct lu_ser_memfd from kho_alloc_preserve; its
 *   @folios is a kho_preserve_vmalloc() descriptor of an array of
 *   @nr_folios struct lu_ser_folio, sorted by index. Each folio is
 *   preserved with kho_preserve_folio(). Indices without an entry are
 *   holes.
 *
 * Versioning: a change to any structure here bumps LU_KHO_VERSION. A
 * kernel that reads an unknown version, a bad magic or an inconsistent
 * table takes nothing over, says so once in the log, and still loads.
 * Once read, the root's magic is overwritten with LU_KHO_MAGIC_CONSUMED so
 * that reloading the module in the same boot does not take data twice.
 * A load that failed after restoring the table leaves
 * LU_KHO_MAGIC_LOADING: @table then names a live folio, which the next
 * load reads in place.
 */
#ifndef _LU_FORMAT_H
#define _LU_FORMAT_H

#include <linux/kexec_handover.h>
#include <linux/kho/abi/kexec_handover.h>
#include <linux/types.h>
#include <liveupdate/participant.h>

#include "include/uapi/linux/liveupdate.h"

#define LU_KHO_SUBTREE		"liveupdate-module"
#define LU_KHO_MAGIC		0x4c554d4f44303031ULL	/* "LUMOD001" */
#define LU_KHO_MAGIC_CONSUMED	0x4c554d4f44444f4eULL	/* "LUMODDON" */
#define LU_KHO_MAGIC_LOADING	0x4c554d4f444c4f44ULL	/* "LUMODLOD" */
#define LU_KHO_VERSION		3

/**
 * struct lu_ser_root - the subtree's blob
 * @magic:       LU_KHO_MAGIC
 * @version:     LU_KHO_VERSION
 * @root_size:   sizeof(struct lu_ser_root) of the writer
 * @table:       physical address of struct lu_ser_table, or 0
 * @table_size:  bytes of the table block
 * @table_crc:   crc32_le(~0, ...) ^ ~0 of the table's used bytes
 * @reserved:    zero
 */
struct lu_ser_root {
	__u64 magic;
	__u32 version;
	__u32 root_size;
	__u64 table;
	__u64 table_size;
	__u32 table_crc;
	__u32 reserved;
};

/**
 * struct lu_ser_table - header of the session table
 * @nr_sessions:   session entries that follow
 * @nr_files:      file entries after the session entries
 * @nr_deps:       dependency tokens after the file entries
 * @nr_subsystems: subsystem entries after the dependency tokens
 */
struct lu_ser_table {
	__u32 nr_sessions;
	__u32 nr_files;
	__u32 nr_deps;
	__u32 nr_subsystems;
};

/**
 * struct lu_ser_session - one session
 * @name:       NUL-terminated name
 * @first_file: index of the session's first file entry
 * @nr_files:   number of the session's file entries
 */
struct lu_ser_session {
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
	__u32 first_file;
	__u32 nr_files;
};

/**
 * struct lu_ser_file - one preserved file
 * @token:      the token userspace gave at preserve time
 * @data:       physical address of the handler's block
 * @compatible: NUL-terminated handler name, e.g. "memfd-v1"
 * @first_dep:  index of the file's first dependency token
 * @nr_deps:    number of its dependency tokens
 */
struct lu_ser_file {
	__u64 token;
	__u64 data;
	char compatible[LU_COMPATIBLE_LENGTH];
	__u32 first_dep;
	__u32 nr_deps;
};

/**
 * struct lu_ser_subsystem - one subsystem's hand-over
 * @name: NUL-terminated subsystem name
 * @data: what its callbacks handed over (physical address, or 0)
 */
struct lu_ser_subsystem {
	char name[LU_COMPATIBLE_LENGTH];
	__u64 data;
};

#define LU_MEMFD_COMPATIBLE	"memfd-v1"

/**
 * struct lu_ser_memfd - a preserved memfd
 * @size:      i_size at kexec
 * @pos:       file position at kexec
 * @seals:     F_SEAL_* bits
 * @records_crc: CRC32 of the @nr_folios records of @folios, in order
 * @nr_folios: entries in @folios
 * @folios:    the array of struct lu_ser_folio
 * @crc:       CRC32 of the fields above
 * @reserved:  zero
 */
struct lu_ser_memfd {
	__u64 size;
	__u64 pos;
	__u32 seals;
	__u32 records_crc;
	__u64 nr_folios;
	struct kho_vmalloc folios;
	__u32 crc;
	__u32 reserved;
};

/* lu_ser_folio.pfn_order: the folio's pfn above, its order in the low byte */
#define LU_FOLIO_ORDER_BITS	8
#define LU_FOLIO_ORDER_MASK	((1ULL << LU_FOLIO_ORDER_BITS) - 1)

/**
 * struct lu_ser_folio - one folio of a memfd
 * @index:     page index of the folio's first page in the file
 * @pfn_order: (pfn << LU_FOLIO_ORDER_BITS) | order
 */
struct lu_ser_folio {
	__u64 index;
	__u64 pfn_order;
};

#endif /* _LU_FORMAT_H */
