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
 *   struct lu_ser_root. @table is empty (no first page) until the kexec
 *   reboot notifier or FREEZE has written the table; a root without a
 *   table carries no session.
 *
 * Checksums: nothing the previous kernel wrote is trusted before it is
 *   checked, and no address is given to KHO (whose restore functions WARN
 *   on memory that was not preserved) or followed before the checksum
 *   covering it matched. The root holds the CRC32 of the table's used
 *   bytes, which cover every session, file and subsystem record and every
 *   participant's data, and the CRC32 of the table's page list, which
 *   covers the address of every page of the table. Both are read in place
 *   (each page checked to be RAM) and the table is taken over only once
 *   both match. A memfd's data (in the table) holds the CRC32 of its folio
 *   records, which are read in place the same way before any folio is
 *   restored. Policy: a damaged root or table takes nothing over (all or
 *   nothing); a memfd whose records are damaged fails alone (-EIO on
 *   every retrieval), its folios stay reserved, and the rest of its
 *   session is retrieved as usual.
 *
 * Table (a vmalloc area preserved with kho_preserve_vmalloc(), order-0
 *   pages, of any size up to LU_TABLE_MAX_BYTES; grown when sessions,
 *   files or subsystems are added, filled at FREEZE and by the reboot
 *   notifier): struct lu_ser_table, then @nr_sessions struct
 *   lu_ser_session, then @nr_files struct lu_ser_file, then @nr_deps
 *   __u64 tokens, then @nr_subsystems struct lu_ser_subsystem, then
 *   @data_bytes of participants' data. Session i owns files [first_file,
 *   first_file + nr_files); file j depends on the tokens [first_dep,
 *   first_dep + nr_deps), all in its own session. A session's files come
 *   in dependency order: a file's dependencies before it. Session names
 *   are unique, and so are subsystem names.
 *
 * Participants' data: each file and subsystem entry names up to
 *   LU_MAX_DATA bytes of its participant's own data in the data area
 *   (@data_offset, 8-byte aligned, and @data_size), whose format the
 *   participant defines (memfd below). Participants never see a physical
 *   address of liveupdate's: they get their data, checked, as a kernel
 *   copy. A file entry names its handler by @compatible; a handler that
 *   is not registered when the table is read may register later, and its
 *   files wait.
 *
 * memfd ("memfd-v2"): its data is struct lu_ser_memfd; @folios is a
 *   kho_preserve_vmalloc() descriptor of an array of @nr_folios struct
 *   lu_ser_folio, sorted by index. Each folio is preserved with
 *   kho_preserve_folio(). Indices without an entry are holes.
 *
 * liveupdatefs (lu_fs.c): an instance is a session whose file of token
 *   LU_FS_TREE_TOKEN ("lufs-tree-v1") holds the tree: its data is struct
 *   lu_ser_fs_tree, naming a kho_preserve_vmalloc() area of @nr_nodes
 *   struct lu_ser_fs_node, then @names_bytes of names and symlink
 *   targets. Node 0 is the root directory; every other node comes after
 *   its parent directory, and names one directory entry: a regular file
 *   linked twice has two nodes of one @ino. Each regular file's data is
 *   the session's file of token @ino ("lufs-file-v1", the memfd format
 *   above), which depends on the tree.
 *
 * Versioning: a change to any structure here bumps LU_KHO_VERSION. A
 * kernel that reads an unknown version, a bad magic or an inconsistent
 * table takes nothing over, says so once in the log, and still loads.
 * Once taken over, the root's magic is overwritten with
 * LU_KHO_MAGIC_CONSUMED so that reloading the module in the same boot does
 * not take data twice. The table is read into a copy and its pages are
 * given back only then: a load that fails before leaves everything as the
 * previous kernel wrote it, for a later load.
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
#define LU_KHO_VERSION		4

/*
 * The largest table: bounds what the next kernel allocates for its copy.
 * It holds millions of files, so it also keeps every count below 2^32.
 */
#define LU_TABLE_MAX_BYTES	(256UL << 20)
/* Most subsystems registered at once: their names are checked pairwise. */
#define LU_MAX_SUBSYSTEMS	64

/**
 * struct lu_ser_root - the subtree's blob
 * @magic:       LU_KHO_MAGIC
 * @version:     LU_KHO_VERSION
 * @root_size:   sizeof(struct lu_ser_root) of the writer
 * @table:       the table's vmalloc area (kho_preserve_vmalloc()), or
 *               all zero
 * @table_bytes: used bytes at the start of the area
 * @table_crc:   crc32_le(~0, ...) ^ ~0 of those bytes
 * @list_crc:    the same CRC of every page of the area's page list
 *               (struct kho_vmalloc_chunk), whole, in list order
 * @reserved:    zero
 */
struct lu_ser_root {
	__u64 magic;
	__u32 version;
	__u32 root_size;
	struct kho_vmalloc table;
	__u64 table_bytes;
	__u32 table_crc;
	__u32 list_crc;
	__u64 reserved;
};

/**
 * struct lu_ser_table - header of the session table
 * @nr_sessions:   session entries that follow
 * @nr_files:      file entries after the session entries
 * @nr_deps:       dependency tokens after the file entries
 * @nr_subsystems: subsystem entries after the dependency tokens
 * @data_bytes:    bytes of participants' data after the subsystem entries
 * @reserved:      zero
 */
struct lu_ser_table {
	__u32 nr_sessions;
	__u32 nr_files;
	__u32 nr_deps;
	__u32 nr_subsystems;
	__u32 data_bytes;
	__u32 reserved;
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
 * @token:       the token userspace gave at preserve time
 * @compatible:  NUL-terminated handler name, e.g. "memfd-v2"
 * @first_dep:   index of the file's first dependency token
 * @nr_deps:     number of its dependency tokens
 * @data_offset: where the handler's data starts in the data area
 * @data_size:   its bytes
 */
struct lu_ser_file {
	__u64 token;
	char compatible[LU_COMPATIBLE_LENGTH];
	__u32 first_dep;
	__u32 nr_deps;
	__u32 data_offset;
	__u32 data_size;
};

/**
 * struct lu_ser_subsystem - one subsystem's hand-over
 * @name:        NUL-terminated subsystem name
 * @data_offset: where its data starts in the data area
 * @data_size:   its bytes
 */
struct lu_ser_subsystem {
	char name[LU_COMPATIBLE_LENGTH];
	__u32 data_offset;
	__u32 data_size;
};

#define LU_MEMFD_COMPATIBLE	"memfd-v2"

/**
 * struct lu_ser_memfd - a preserved memfd (its file entry's data)
 * @size:      i_size at kexec
 * @pos:       file position at kexec
 * @seals:     F_SEAL_* bits
 * @records_crc: CRC32 of the @nr_folios records of @folios, in order
 * @nr_folios: entries in @folios
 * @folios:    the array of struct lu_ser_folio
 *
 * The file's name (its dentry's, "memfd:NAME") follows, without a NUL, up
 * to the end of the data: at most NAME_MAX bytes, none in data written
 * before names were carried.
 */
struct lu_ser_memfd {
	__u64 size;
	__u64 pos;
	__u32 seals;
	__u32 records_crc;
	__u64 nr_folios;
	struct kho_vmalloc folios;
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

#define LU_FS_TREE_COMPATIBLE	"lufs-tree-v1"
#define LU_FS_FILE_COMPATIBLE	"lufs-file-v1"
/* The tree's token; a regular file's token is its inode number. */
#define LU_FS_TREE_TOKEN	LIVEUPDATE_FS_TREE_TOKEN

/**
 * struct lu_ser_fs_tree - an instance's tree (its tree file's data)
 * @nr_nodes:    entries at the start of @area
 * @names_bytes: bytes of names and symlink targets after them
 * @area_crc:    CRC32 of those nodes and names
 * @list_crc:    CRC32 of the area's page list (as struct lu_ser_root's)
 * @area:        the nodes, then the names
 */
struct lu_ser_fs_tree {
	__u64 nr_nodes;
	__u64 names_bytes;
	__u32 area_crc;
	__u32 list_crc;
	struct kho_vmalloc area;
};

/**
 * struct lu_ser_fs_node - one directory entry and its inode
 * @ino:        the inode's number (a regular file's token)
 * @parent:     index of the node of the directory that holds the entry
 *              (the root: 0)
 * @mode:       type and permissions
 * @uid:        owner, in the initial user namespace
 * @gid:        group, in the initial user namespace
 * @rdev:       device number of a device node (new_encode_dev())
 * @name_len:   bytes of the name (the root: 0)
 * @name_off:   where the name starts after the nodes; a symlink's target
 *              follows it, @size bytes
 * @size:       a symlink's target length; else 0 (a file's size is in its
 *              own data)
 * @atime_sec:  access time
 * @mtime_sec:  modification time
 * @ctime_sec:  change time
 * @atime_nsec: nanoseconds of @atime_sec
 * @mtime_nsec: nanoseconds of @mtime_sec
 * @ctime_nsec: nanoseconds of @ctime_sec
 * @reserved:   zero
 */
struct lu_ser_fs_node {
	__u64 ino;
	__u32 parent;
	__u32 mode;
	__u32 uid;
	__u32 gid;
	__u32 rdev;
	__u32 name_len;
	__u64 name_off;
	__u64 size;
	__s64 atime_sec;
	__s64 mtime_sec;
	__s64 ctime_sec;
	__u32 atime_nsec;
	__u32 mtime_nsec;
	__u32 ctime_nsec;
	__u32 reserved;
};

#endif /* _LU_FORMAT_H */
