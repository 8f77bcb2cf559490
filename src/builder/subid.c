/*
 * /etc/subuid and /etc/subgid lookup for rootless builds (include/ocibuild/spec.h): the build
 * user (container 1000:100) is mapped to the first id of the invoking user's subordinate
 * ranges, which newuidmap/newgidmap (package uidmap) allow. Lines are "user:start:count" where
 * user is a name or a decimal uid, as shadow's tools accept.
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/spec.h"

#define SUBID_FILE_MAX (4 << 20)

static int parse_u32(const char *s, size_t len, uint32_t *out)
{
    if (len == 0 || len > 10)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > UINT32_MAX)
        return -ERANGE;
    *out = (uint32_t)v;
    return 0;
}

static bool user_matches(const char *field, size_t len, const char *user, uint32_t id)
{
    if (user && strlen(user) == len && memcmp(field, user, len) == 0)
        return true;
    uint32_t v;
    return parse_u32(field, len, &v) == 0 && v == id;
}

int obi_subid_parse(const char *text, const char *file, const char *kind, const char *user,
                    uint32_t id, obi_subid_range *out, obi_error **err)
{
    unsigned line_no = 0;
    const char *line = text;
    while (line && *line) {
        line_no++;
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *next = end ? end + 1 : NULL;
        if (len == 0 || line[0] == '#') {
            line = next;
            continue;
        }
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
        obi_subid_range range;
        if (!c1 || !c2 || c1 == line ||
            parse_u32(c1 + 1, (size_t)(c2 - c1 - 1), &range.start) < 0 ||
            parse_u32(c2 + 1, len - (size_t)(c2 + 1 - line), &range.count) < 0)
            return obi_error_set(err, -EINVAL, "%s:%u: malformed line (expected name:start:count)",
                                 file, line_no);
        if (range.count > 0 && user_matches(line, (size_t)(c1 - line), user, id)) {
            *out = range;
            return 0;
        }
        line = next;
    }
    const char *who = user ? user : "USER";
    return obi_error_set(err, -ENOENT,
                         "no subordinate %s range for user %s (uid %u) in %s; rootless builds "
                         "need one: add it with `usermod --add-sub%ss 100000-165535 %s` (as root)",
                         kind, who, id, file, kind, who);
}

int obi_subid_lookup(const char *path, const char *kind, const char *user, uint32_t id,
                     obi_subid_range *out, obi_error **err)
{
    cleanup_free char *text = NULL;
    cleanup_error obi_error *read_err = NULL;
    size_t len = 0;
    int r = obi_read_file(path, SUBID_FILE_MAX, &text, &len, &read_err);
    if (r == -ENOENT) {
        text = strdup(""); /* a missing file has no ranges: same advice */
        if (!text)
            return obi_error_oom(err);
    } else if (r < 0) {
        return obi_error_move(err, &read_err);
    }
    return obi_subid_parse(text, path, kind, user, id, out, err);
}

int obi_spec_options_rootless_current_user(obi_spec_options *opts, obi_error **err)
{
    uid_t uid = getuid();
    gid_t gid = getgid();
    char buf[4096];
    struct passwd pw, *found = NULL;
    const char *name = NULL;
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found)
        name = found->pw_name;
    const char *subuid_file = getenv("OCIBUILD_SUBUID_FILE");
    const char *subgid_file = getenv("OCIBUILD_SUBGID_FILE");
    obi_subid_range subuid = {0}, subgid = {0};
    int r =
        obi_subid_lookup(subuid_file ? subuid_file : "/etc/subuid", "uid", name, uid, &subuid, err);
    if (r < 0)
        return r;
    /* subgid entries are owned by the user too (name or uid), not by a group */
    r = obi_subid_lookup(subgid_file ? subgid_file : "/etc/subgid", "gid", name, uid, &subgid, err);
    if (r < 0)
        return r;
    opts->rootless = true;
    opts->root_uid = uid;
    opts->root_gid = gid;
    opts->build_uid = subuid.start;
    opts->build_gid = subgid.start;
    return 0;
}
