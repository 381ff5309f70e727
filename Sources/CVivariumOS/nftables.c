#define _GNU_SOURCE
#include "vivarium_nftables.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// libnftables (from the nftables package) is loaded at run time, so neither its headers nor a link-time
// dependency are needed; these are its stable public entry points (libnftables.so.1).
struct nft_ctx;
static struct nft_ctx *(*ctx_new)(uint32_t flags);
static void (*ctx_free)(struct nft_ctx *);
static int (*buffer_error)(struct nft_ctx *);
static int (*buffer_output)(struct nft_ctx *);
static const char *(*get_error)(struct nft_ctx *);
static const char *(*get_output)(struct nft_ctx *);
static int (*run_buffer)(struct nft_ctx *, const char *);
static pthread_once_t loaded = PTHREAD_ONCE_INIT;
static int load_error;

static void load(void) {
    void *lib = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        load_error = ENOENT;
        return;
    }
    ctx_new = dlsym(lib, "nft_ctx_new");
    ctx_free = dlsym(lib, "nft_ctx_free");
    buffer_error = dlsym(lib, "nft_ctx_buffer_error");
    buffer_output = dlsym(lib, "nft_ctx_buffer_output");
    get_error = dlsym(lib, "nft_ctx_get_error_buffer");
    get_output = dlsym(lib, "nft_ctx_get_output_buffer");
    run_buffer = dlsym(lib, "nft_run_cmd_from_buffer");
    if (!ctx_new || !ctx_free || !buffer_error || !buffer_output || !get_error || !get_output || !run_buffer) load_error = ENOSYS;
}

struct vv_nft {
    struct nft_ctx *ctx;
    pthread_mutex_t lock;
};

struct open_args {
    int ns_fd;
    struct nft_ctx *ctx;
    int error;
};

// The context opens its netlink socket when it is made: made on a thread that joined the namespace, it
// talks to that namespace from any thread afterwards.
static void *open_in_ns(void *p) {
    struct open_args *a = p;
    if (a->ns_fd >= 0 && setns(a->ns_fd, CLONE_NEWNET) < 0) {
        a->error = errno;
        return NULL;
    }
    a->ctx = ctx_new(0);
    if (!a->ctx) a->error = ENOMEM;
    return NULL;
}

vv_nft *vv_nft_open(int ns_fd, int *error) {
    pthread_once(&loaded, load);
    if (load_error) {
        *error = load_error;
        return NULL;
    }
    struct open_args a = {.ns_fd = ns_fd};
    if (ns_fd < 0) {
        open_in_ns(&a);
    } else {
        pthread_t t;
        int rc = pthread_create(&t, NULL, open_in_ns, &a);
        if (rc != 0) {
            *error = rc;
            return NULL;
        }
        pthread_join(t, NULL);
    }
    if (!a.ctx) {
        *error = a.error;
        return NULL;
    }
    buffer_error(a.ctx);
    buffer_output(a.ctx);
    vv_nft *n = calloc(1, sizeof *n);
    if (!n) {
        ctx_free(a.ctx);
        *error = ENOMEM;
        return NULL;
    }
    n->ctx = a.ctx;
    pthread_mutex_init(&n->lock, NULL);
    return n;
}

int vv_nft_run(vv_nft *n, const char *batch, char *text, size_t text_len) {
    pthread_mutex_lock(&n->lock);
    int rc = run_buffer(n->ctx, batch);
    // Reading a buffer also empties it for the next run.
    const char *out = get_output(n->ctx);
    const char *err = get_error(n->ctx);
    if (text_len > 0) {
        if (rc == 0) snprintf(text, text_len, "%s", out ? out : "");
        else snprintf(text, text_len, "%s", err && *err ? err : "nft failed");
    }
    pthread_mutex_unlock(&n->lock);
    return rc == 0 ? 0 : -1;
}

void vv_nft_close(vv_nft *n) {
    if (!n) return;
    ctx_free(n->ctx);
    pthread_mutex_destroy(&n->lock);
    free(n);
}
