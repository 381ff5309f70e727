#pragma once
#include <stdint.h>

/// rtnetlink, enough for sandbox networks. Every call returns 0 (or a value) or -errno.

/// A socket (close-on-exec) made in the network namespace open at ns_fd (-1: the caller's) by a short-lived
/// thread that joins it: the caller's thread never changes namespace.
int vv_socket_in_ns(int ns_fd, int domain, int type, int protocol);

/// A NETLINK_ROUTE socket in the network namespace open at ns_fd (-1: the caller's). The socket is made
/// on a short-lived thread that joins the namespace, so the caller's thread never changes namespace.
int vv_rtnl_open(int ns_fd);

/// The index of interface `name`, or -ENODEV.
int vv_rtnl_index(int sock, const char *name);

/// Creates a bridge (EEXIST when a link of that name exists).
int vv_rtnl_bridge(int sock, const char *name);

/// Creates the veth pair host_name (in the socket's namespace, enslaved to master_index when > 0, set up)
/// and peer_name, made directly inside the namespace open at peer_ns_fd, in one request.
int vv_rtnl_veth(int sock, const char *host_name, int master_index, const char *peer_name, int peer_ns_fd);

/// Sets the link up.
int vv_rtnl_up(int sock, int index);

/// Deletes the link (its veth peer goes with it).
int vv_rtnl_delete(int sock, int index);

/// Adds an IPv4 address (network byte order) with its prefix length (EEXIST when it is there).
int vv_rtnl_addr4(int sock, int index, uint32_t address, int prefix);

/// Sets the IPv4 default route via gateway (network byte order) in the main table, replacing one there.
int vv_rtnl_default_route4(int sock, uint32_t gateway);
