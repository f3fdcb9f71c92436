#include "client_edit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

#define CLIENT_EDIT_MAX_FILE (8u << 20)
#define BLOCK_BEGIN "# BEGIN nrbc client-config"
#define BLOCK_END "# END nrbc client-config"

static const char *const result_names[] = {
	[CLIENT_EDIT_UNCHANGED] = "unchanged",
	[CLIENT_EDIT_ADDED] = "added",
	[CLIENT_EDIT_REPLACED] = "replaced",
	[CLIENT_EDIT_CONFLICT] = "conflict",
	[CLIENT_EDIT_ERROR] = "error",
};

const char *client_edit_result_name(enum client_edit_result r)
{
	return r <= CLIENT_EDIT_ERROR ? result_names[r] : "?";
}

/* One line of text: [start, end) without its newline; next is the start of
 * the following line. */
struct line {
	const char *start;
	const char *end;
	const char *next;
};

static bool line_next(const char **p, struct line *l)
{
	const char *nl;

	if (!*p || !**p)
		return false;
	nl = strchr(*p, '\n');
	l->start = *p;
	l->end = nl ? nl : *p + strlen(*p);
	l->next = nl ? nl + 1 : l->end;
	*p = l->next;
	return true;
}

static const char *skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

static const char *trim_end(const char *start, const char *end)
{
	while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	return end;
}

/* Copies old with [cut_start, cut_end) replaced by insert; NULL on ENOMEM. */
static char *text_splice(const char *old, const char *cut_start, const char *cut_end,
    const char *insert)
{
	return str_printf("%.*s%s%s", (int)(cut_start - old), old, insert, cut_end);
}

/* old + (a newline if old lacks one) + add. */
static char *append(const char *old, const char *add)
{
	size_t n = old ? strlen(old) : 0;

	return str_printf("%s%s%s", old ? old : "", n && old[n - 1] != '\n' ? "\n" : "", add);
}

/* ---------- nix.conf ---------- */

enum client_edit_result client_edit_nix_conf(const char *old, const char *key,
    const char *value, bool force, char **out, char **existing)
{
	struct line l, last = { 0 };
	const char *p = old;
	char *setting;
	size_t klen = strlen(key);
	bool found = false;

	*out = *existing = NULL;
	while (line_next(&p, &l)) {
		const char *s = skip_space(l.start, l.end), *eq;

		if ((size_t)(l.end - s) < klen || strncmp(s, key, klen) != 0)
			continue;
		eq = skip_space(s + klen, l.end);
		if (eq == l.end || *eq != '=')
			continue;
		last = l;
		found = true;
	}
	setting = str_printf("%s = %s\n", key, value);
	if (!setting)
		return CLIENT_EDIT_ERROR;
	if (found) {
		const char *v = skip_space(strchr(last.start, '=') + 1, last.end);
		const char *vend = trim_end(v, last.end);

		if ((size_t)(vend - v) == strlen(value) && strncmp(v, value, strlen(value)) == 0) {
			free(setting);
			return CLIENT_EDIT_UNCHANGED;
		}
		if (!force) {
			free(setting);
			*existing = str_printf("%.*s", (int)(last.end - last.start), last.start);
			return *existing ? CLIENT_EDIT_CONFLICT : CLIENT_EDIT_ERROR;
		}
		*out = text_splice(old, last.start, last.next, setting);
		free(setting);
		return *out ? CLIENT_EDIT_REPLACED : CLIENT_EDIT_ERROR;
	}
	*out = append(old, setting);
	free(setting);
	return *out ? CLIENT_EDIT_ADDED : CLIENT_EDIT_ERROR;
}

/* ---------- known_hosts ---------- */

/* Whether the comma-separated host list [hosts, hend) names host. */
static bool hosts_name(const char *hosts, const char *hend, const char *host)
{
	size_t n = strlen(host);

	while (hosts < hend) {
		const char *comma = memchr(hosts, ',', (size_t)(hend - hosts));
		const char *e = comma ? comma : hend;

		if ((size_t)(e - hosts) == n && strncmp(hosts, host, n) == 0)
			return true;
		hosts = e + 1;
	}
	return false;
}

/* Splits "A B C..." into its first three fields. */
static bool fields3(const char *s, const char *end, const char *f[3], size_t len[3])
{
	for (int i = 0; i < 3; i++) {
		s = skip_space(s, end);
		f[i] = s;
		while (s < end && *s != ' ' && *s != '\t')
			s++;
		len[i] = (size_t)(s - f[i]);
		if (!len[i])
			return false;
	}
	return true;
}

enum client_edit_result client_edit_known_hosts(const char *old, const char *line,
    bool force, char **out, char **existing)
{
	const char *want[3], *p = old;
	size_t want_len[3];
	struct line l;
	struct buf kept;
	char *host, *entry;
	bool same = false, conflict = false;

	*out = *existing = NULL;
	if (!fields3(line, line + strlen(line), want, want_len))
		return CLIENT_EDIT_ERROR;
	host = strndup(want[0], want_len[0]);
	if (!host)
		return CLIENT_EDIT_ERROR;
	buf_init(&kept, CLIENT_EDIT_MAX_FILE);
	while (line_next(&p, &l)) {
		const char *f[3];
		size_t len[3];
		bool ours = false, match = false;

		if (fields3(l.start, l.end, f, len) && *skip_space(l.start, l.end) != '#' &&
		    hosts_name(f[0], f[0] + len[0], host) && len[1] == want_len[1] &&
		    strncmp(f[1], want[1], len[1]) == 0) {
			ours = true;
			if (len[2] == want_len[2] && strncmp(f[2], want[2], len[2]) == 0) {
				same = match = true;
			} else {
				conflict = true;
				if (!*existing)
					*existing = strndup(l.start, (size_t)(l.end - l.start));
			}
		}
		/* Forced, the lines with another key for this host go. */
		if ((!ours || match) && buf_append(&kept, l.start, (size_t)(l.next - l.start)) < 0)
			goto nomem;
	}
	free(host);
	if (conflict && !force) {
		buf_finish(&kept);
		return *existing ? CLIENT_EDIT_CONFLICT : CLIENT_EDIT_ERROR;
	}
	free(*existing);
	*existing = NULL;
	if (same && !conflict) {
		buf_finish(&kept);
		return CLIENT_EDIT_UNCHANGED;
	}
	if (buf_append(&kept, "", 1) < 0)
		goto nomem_kept;
	if (same) {
		/* Our line is there; only the conflicting ones went. */
		*out = buf_steal(&kept);
		return *out ? CLIENT_EDIT_REPLACED : CLIENT_EDIT_ERROR;
	}
	entry = str_printf("%s\n", line);
	*out = entry ? append(kept.data, entry) : NULL;
	free(entry);
	buf_finish(&kept);
	if (!*out)
		return CLIENT_EDIT_ERROR;
	return conflict ? CLIENT_EDIT_REPLACED : CLIENT_EDIT_ADDED;
nomem:
	free(host);
nomem_kept:
	buf_finish(&kept);
	free(*existing);
	*existing = NULL;
	return CLIENT_EDIT_ERROR;
}

/* ---------- ssh_config block ---------- */

enum client_edit_result client_edit_ssh_block(const char *old, const char *block, bool force,
    char **out, char **existing)
{
	const char *begin = old ? strstr(old, BLOCK_BEGIN "\n") : NULL, *end, *after;
	char *marked;

	*out = *existing = NULL;
	marked = str_printf(BLOCK_BEGIN "\n%s" BLOCK_END "\n", block);
	if (!marked)
		return CLIENT_EDIT_ERROR;
	if (!begin) {
		size_t n = old ? strlen(old) : 0;

		*out = str_printf("%s%s%s", marked, n ? "\n" : "", old ? old : "");
		free(marked);
		return *out ? CLIENT_EDIT_ADDED : CLIENT_EDIT_ERROR;
	}
	end = strstr(begin, BLOCK_END);
	after = end ? end + strlen(BLOCK_END) : begin + strlen(begin);
	if (*after == '\n')
		after++;
	if ((size_t)(after - begin) == strlen(marked) &&
	    strncmp(begin, marked, strlen(marked)) == 0) {
		free(marked);
		return CLIENT_EDIT_UNCHANGED;
	}
	if (!force) {
		free(marked);
		*existing = strndup(begin, (size_t)(after - begin));
		return *existing ? CLIENT_EDIT_CONFLICT : CLIENT_EDIT_ERROR;
	}
	*out = text_splice(old, begin, after, marked);
	free(marked);
	return *out ? CLIENT_EDIT_REPLACED : CLIENT_EDIT_ERROR;
}

/* ---------- files ---------- */

int client_file_read(const char *path, char **text, char **err)
{
	struct buf b;
	char chunk[8192];
	ssize_t n;
	int fd;

	*text = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		*err = str_printf("cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	buf_init(&b, CLIENT_EDIT_MAX_FILE);
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (buf_append(&b, chunk, (size_t)n) < 0) {
			n = -1;
			errno = EFBIG;
			break;
		}
	}
	if (n < 0) {
		*err = str_printf("cannot read %s: %s", path, strerror(errno));
		close(fd);
		buf_finish(&b);
		return -1;
	}
	close(fd);
	if (buf_append(&b, "", 1) < 0) {
		buf_finish(&b);
		*err = str_printf("cannot read %s: out of memory", path);
		return -1;
	}
	if (memchr(b.data, '\0', b.len - 1)) {
		buf_finish(&b);
		*err = str_printf("%s contains NUL bytes; not editing it", path);
		return -1;
	}
	*text = buf_steal(&b);
	return 0;
}

/* mkdir -p of path's parent. */
static int make_parents(const char *path, char **err)
{
	char *dir = strdup(path), *p, *base;

	if (!dir)
		goto nomem;
	for (p = dir + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		base = strrchr(dir, '/');
		if (mkdir(dir, base && strcmp(base, "/.ssh") == 0 ? 0700 : 0755) < 0 &&
		    errno != EEXIST) {
			*err = str_printf("cannot create %s: %s", dir, strerror(errno));
			free(dir);
			return -1;
		}
		*p = '/';
	}
	free(dir);
	return 0;
nomem:
	*err = strdup("out of memory");
	return -1;
}

int client_file_write(const char *path, const char *text, mode_t mode, char **err)
{
	struct stat st;
	size_t len = strlen(text), off = 0;
	char *tmp;
	int fd;

	if (stat(path, &st) == 0)
		mode = st.st_mode & 07777;
	if (make_parents(path, err) < 0)
		return -1;
	tmp = str_printf("%s.nrbc-tmp", path);
	if (!tmp) {
		*err = strdup("out of memory");
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		goto fail;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail_fd;
		off += (size_t)n;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0)
		goto fail_fd;
	if (close(fd) < 0)
		goto fail_unlink;
	if (rename(tmp, path) < 0)
		goto fail_unlink;
	free(tmp);
	return 0;
fail_fd:
	close(fd);
fail_unlink:
	*err = str_printf("cannot write %s: %s", path, strerror(errno));
	unlink(tmp);
	free(tmp);
	return -1;
fail:
	*err = str_printf("cannot write %s: %s", path, strerror(errno));
	free(tmp);
	return -1;
}
