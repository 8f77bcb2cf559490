/*
 * The FUSE INIT handshake, watched from the connection's I/O (see castore_fs_internal.h): the
 * flags of the kernel's INIT request, and flags libfuse 3.14 does not know added to its reply
 * where the kernel offered them. libfuse builds its reply only from the capabilities it knows
 * (protocol 7.38); FUSE_DIRECT_IO_ALLOW_MMAP (7.39, Linux 6.6) lets a file opened for direct
 * I/O be mapped shared as well, which the filesystem needs before it can open any file for
 * direct I/O (castore_fs.c, reads_direct). The layout of both messages is the kernel's ABI
 * (linux/fuse.h); nothing else of the protocol is looked at.
 */
#include <linux/fuse.h>
#include <stddef.h>
#include <string.h>

#include "castore_fs_internal.h"

/* The request's body up to flags, and up to flags2 (sent from protocol 7.36 on). */
#define INIT_IN_FLAGS_END (offsetof(struct fuse_init_in, flags) + sizeof(uint32_t))
#define INIT_IN_FLAGS2_END (offsetof(struct fuse_init_in, flags2) + sizeof(uint32_t))

void fs_init_watch_request(fs_init_watch *watch, const void *message, size_t len)
{
    if (__atomic_load_n(&watch->replied, __ATOMIC_ACQUIRE) || watch->seen)
        return;
    struct fuse_in_header in;
    struct fuse_init_in init;
    if (len < sizeof in + INIT_IN_FLAGS_END)
        return;
    memcpy(&in, message, sizeof in);
    if (in.opcode != FUSE_INIT)
        return;
    memset(&init, 0, sizeof init);
    size_t body = len - sizeof in < sizeof init ? len - sizeof in : sizeof init;
    memcpy(&init, (const uint8_t *)message + sizeof in, body);
    watch->offered = init.flags;
    if ((init.flags & FUSE_INIT_EXT) && body >= INIT_IN_FLAGS2_END)
        watch->offered |= (uint64_t)init.flags2 << 32;
    watch->unique = in.unique;
    watch->seen = true;
}

bool fs_init_watch_reply(fs_init_watch *watch, const struct iovec *iov, int count)
{
    if (__atomic_load_n(&watch->replied, __ATOMIC_ACQUIRE) || !watch->seen || count < 1 ||
        iov[0].iov_len < sizeof(struct fuse_out_header))
        return false;
    struct fuse_out_header out;
    memcpy(&out, iov[0].iov_base, sizeof out);
    if (out.unique != watch->unique)
        return false;
    uint64_t granted = 0;
    struct fuse_init_out init;
    /* libfuse sends the whole fuse_init_out as the second part, with FUSE_INIT_EXT in it when
     * the kernel sent it: anything else is left as it is. */
    if (out.error == 0 && count >= 2 && iov[1].iov_len >= sizeof init) {
        memcpy(&init, iov[1].iov_base, sizeof init);
        uint64_t add = watch->wanted & watch->offered & ~(uint64_t)UINT32_MAX;
        if ((init.flags & FUSE_INIT_EXT) && add) {
            init.flags2 |= (uint32_t)(add >> 32);
            memcpy(iov[1].iov_base, &init, sizeof init);
        }
        granted = init.flags | (uint64_t)init.flags2 << 32;
    }
    watch->granted = granted;
    __atomic_store_n(&watch->replied, true, __ATOMIC_RELEASE);
    return true;
}

bool fs_init_watch_granted(const fs_init_watch *watch, uint64_t flag)
{
    return __atomic_load_n(&watch->replied, __ATOMIC_ACQUIRE) && (watch->granted & flag) == flag;
}
