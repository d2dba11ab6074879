// SPDX-License-Identifier: GPL-2.0
/*
 * The benchmark's guest side: one live update of memfds, measured.
 *
 *   lu_bench preserve --size BYTES --files N --seed S --out FILE
 *                     [--module KO] [--no-events]
 *   lu_bench retrieve --size BYTES --files N --seed S --out FILE
 *                     [--module KO]
 *
 * "preserve" runs in the first kernel: it fills N memfds holding BYTES in
 * all, preserves them in session "bench" (and sends PREPARE and FREEZE
 * when the kernel is ours, unless --no-events), loads the next kernel
 * and reboots into it itself. "retrieve" runs in the next kernel:
 * retrieves every file, reads all of it once and finishes the session.
 *
 * Both use only mainline's session uAPI, so they run unchanged against
 * mainline's in-kernel LUO and against liveupdate.ko (loaded by --module,
 * whose load time counts as part of retrieving). Each writes its figures
 * as one JSON object to --out. Times within one kernel come from
 * CLOCK_MONOTONIC; the moments that straddle the kexec are marked by
 * console lines ("LU-BENCH reboot", "LU-BENCH held") that the host stamps
 * as they arrive on the serial port, since no guest clock survives kexec.
 */
#include <getopt.h>
#include <inttypes.h>
#include <linux/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>

#include "../selftests/lu_util.h"

#define PAGE 4096
#define CHUNK (1 << 20)
#define SESSION "bench"
#define fallthrough __attribute__((__fallthrough__))

struct bench_args {
	uint64_t size;
	unsigned int files;
	uint32_t seed;
	const char *out;
	const char *module;
	int events;
};

static FILE *json;
static const char *json_sep = "{";

static void die(const char *what, int err)
{
	fprintf(stderr, "lu_bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put_num(const char *key, double value)
{
	fprintf(json, "%s\n  \"%s\": %.6f", json_sep, key, value);
	json_sep = ",";
}

static void put_kb(const char *key, long kb)
{
	put_num(key, kb * 1024.0);
}

/* Console line for the host's clock; drained so it leaves before reboot(). */
static void mark(const char *what)
{
	printf("LU-BENCH %s\n", what);
	fflush(stdout);
	if (isatty(STDOUT_FILENO))
		tcdrain(STDOUT_FILENO);
}

/* Stamp at the start of page @page of file @file: the check on read. */
static uint64_t stamp(uint32_t seed, unsigned int file, uint64_t page)
{
	uint64_t x = ((uint64_t)file << 40 | page) * 0x9E3779B97F4A7C15ULL + seed;

	return x ^ x >> 31;
}

static uint64_t file_size(const struct bench_args *a)
{
	return a->size / a->files / PAGE * PAGE;
}

static int fill_memfd(const struct bench_args *a, unsigned int file, char *buf)
{
	uint64_t size = file_size(a), off;
	int fd = memfd_create("lu-bench", MFD_CLOEXEC);

	if (fd < 0)
		die("memfd_create", errno);
	for (off = 0; off < size; off += CHUNK) {
		size_t n = size - off < CHUNK ? size - off : CHUNK;
		size_t p;

		for (p = 0; p < n; p += PAGE)
			*(uint64_t *)(buf + p) = stamp(a->seed, file, (off + p) / PAGE);
		if (pwrite(fd, buf, n, off) != (ssize_t)n)
			die("filling a memfd", errno);
	}
	/* A position to carry, as a VMM's would be. */
	lseek(fd, size / 2, SEEK_SET);
	return fd;
}

/* Reads all of @fd once; returns the first page whose stamp is wrong, or -1. */
static int64_t read_memfd(const struct bench_args *a, unsigned int file, int fd,
			  char *buf)
{
	uint64_t size = file_size(a), off;
	struct stat st;

	if (fstat(fd, &st) || (uint64_t)st.st_size != size)
		return 0;
	if (lseek(fd, 0, SEEK_CUR) != (off_t)(size / 2))
		return 0;
	for (off = 0; off < size; off += CHUNK) {
		size_t n = size - off < CHUNK ? size - off : CHUNK;
		size_t p;

		if (pread(fd, buf, n, off) != (ssize_t)n)
			return off / PAGE;
		for (p = 0; p < n; p += PAGE)
			if (*(uint64_t *)(buf + p) != stamp(a->seed, file, (off + p) / PAGE))
				return (off + p) / PAGE;
	}
	return -1;
}

/* Loads liveupdate.ko; returns the seconds it took. */
static double load_module(const char *path)
{
	double t = now();
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die(path, errno);
	if (syscall(SYS_finit_module, fd, "", 0))
		die("loading the module", errno);
	close(fd);
	return now() - t;
}

static void open_json(const char *path)
{
	json = fopen(path, "w");
	if (!json)
		die(path, errno);
}

static void close_json(void)
{
	fprintf(json, "\n}\n");
	if (fflush(json) || fsync(fileno(json)) || fclose(json))
		die("writing the results", errno);
}

static int is_ours(int dev)
{
	struct liveupdate_get_state st;

	return lu_get_state(dev, &st) == 0;
}

static void send_event(int dev, uint32_t event, const char *key)
{
	double t = now();
	int err = lu_event(dev, event, NULL);

	if (err)
		die(key, err);
	put_num(key, now() - t);
}

/*
 * What both stages do first: the I/O buffer (touched now, so that using it
 * allocates nothing the memory figures would see), room for the fds, the
 * results file, free memory, and liveupdate.ko when asked.
 */
static char *start_stage(const struct bench_args *a, int **fds)
{
	char *buf = malloc(CHUNK);

	*fds = calloc(a->files, sizeof(int));
	if (!buf || !*fds)
		die("malloc", ENOMEM);
	memset(buf, 0x5a, CHUNK);
	open_json(a->out);
	put_kb("free_start", lu_free_kb());
	if (a->module)
		put_num("insmod_s", load_module(a->module));
	return buf;
}

static int run_preserve(const struct bench_args *a)
{
	int *fds;
	char *buf = start_stage(a, &fds);
	int dev, session, ours, err;
	unsigned int i;
	double t;

	/* The next kernel is loaded first, so its copy is not counted below. */
	if (system("kexec -s -l \"$LU_KERNEL\" --initrd=\"$LU_INITRD\" --command-line=\"$LU_NEXT_APPEND\""))
		die("kexec -s -l", EIO);

	t = now();
	for (i = 0; i < a->files; i++)
		fds[i] = fill_memfd(a, i, buf);
	put_num("fill_s", now() - t);
	put_num("bytes", (double)file_size(a) * a->files);
	put_kb("free_before_preserve", lu_free_kb());

	dev = open(LU_DEVICE, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		die(LU_DEVICE, errno);
	ours = is_ours(dev);
	session = lu_create_session(dev, SESSION);
	if (session < 0)
		die("CREATE_SESSION", session);
	t = now();
	for (i = 0; i < a->files; i++) {
		err = lu_preserve(session, fds[i], i + 1);
		if (err)
			die("PRESERVE_FD", err);
	}
	put_num("preserve_s", now() - t);
	if (ours && a->events) {
		send_event(dev, LIVEUPDATE_EVENT_PREPARE, "prepare_s");
		send_event(dev, LIVEUPDATE_EVENT_FREEZE, "freeze_s");
	}
	put_kb("free_after_preserve", lu_free_kb());
	put_num("ours", ours);
	close_json();

	printf("LU-STAGE %s/%s RESULT 0\n", getenv("LU_STAGE"), getenv("LU_STAGES"));
	sync();
	mark("reboot");
	syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
		LINUX_REBOOT_CMD_KEXEC, NULL);
	die("reboot(LINUX_REBOOT_CMD_KEXEC)", errno);
	return 1;
}

static int run_retrieve(const struct bench_args *a)
{
	int *fds;
	char *buf = start_stage(a, &fds);
	int dev, session, err;
	unsigned int i;
	double t;

	put_kb("free_before_retrieve", lu_free_kb());

	t = now();
	dev = open(LU_DEVICE, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		die(LU_DEVICE, errno);
	session = lu_retrieve_session(dev, SESSION);
	if (session < 0)
		die("RETRIEVE_SESSION", session);
	for (i = 0; i < a->files; i++) {
		fds[i] = lu_retrieve(session, i + 1);
		if (fds[i] < 0)
			die("RETRIEVE_FD", fds[i]);
	}
	put_num("retrieve_s", now() - t);
	mark("held");
	put_kb("free_after_retrieve", lu_free_kb());

	t = now();
	for (i = 0; i < a->files; i++) {
		int64_t bad = read_memfd(a, i, fds[i], buf);

		if (bad >= 0) {
			fprintf(stderr, "lu_bench: file %u differs at page %" PRId64 "\n",
				i + 1, bad);
			return 1;
		}
	}
	put_num("first_read_s", now() - t);

	t = now();
	err = lu_finish(session);
	if (err)
		die("FINISH", err);
	put_num("finish_s", now() - t);
	put_kb("free_after_finish", lu_free_kb());
	close_json();
	return 0;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 0);

	switch (*end) {
	case 'G':
		v <<= 10;
		fallthrough;
	case 'M':
		v <<= 10;
		fallthrough;
	case 'K':
		v <<= 10;
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "files", required_argument, NULL, 'f' },
		{ "seed", required_argument, NULL, 'r' },
		{ "out", required_argument, NULL, 'o' },
		{ "module", required_argument, NULL, 'm' },
		{ "no-events", no_argument, NULL, 'n' },
		{ }
	};
	struct bench_args a = { .files = 1, .seed = 1, .events = 1 };
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			a.size = parse_size(optarg);
			break;
		case 'f':
			a.files = strtoul(optarg, NULL, 0);
			break;
		case 'r':
			a.seed = strtoul(optarg, NULL, 0);
			break;
		case 'o':
			a.out = optarg;
			break;
		case 'm':
			a.module = optarg;
			break;
		case 'n':
			a.events = 0;
			break;
		default:
			return 2;
		}
	}
	if (optind != argc - 1 || !a.out || !a.files || file_size(&a) == 0) {
		fprintf(stderr, "usage: lu_bench preserve|retrieve --size BYTES --files N --out FILE [--seed S] [--module KO] [--no-events]\n");
		return 2;
	}
	if (!strcmp(argv[optind], "preserve"))
		return run_preserve(&a);
	if (!strcmp(argv[optind], "retrieve"))
		return run_retrieve(&a);
	fprintf(stderr, "lu_bench: unknown command %s\n", argv[optind]);
	return 2;
}
