#pragma once
#include <stddef.h>
#include <stdint.h>

/// nftables in process, through libnftables (loaded with dlopen on first use).
typedef struct vv_nft vv_nft;

/// A context talking to the network namespace open at ns_fd (-1: the caller's). NULL with *error set
/// (ENOENT: libnftables.so.1 is not installed).
vv_nft *vv_nft_open(int ns_fd, int *error);

/// Runs a batch in one transaction: 0 with what it printed (a listing) in text, or -1 with nft's message.
int vv_nft_run(vv_nft *n, const char *batch, char *text, size_t text_len);

void vv_nft_close(vv_nft *n);
