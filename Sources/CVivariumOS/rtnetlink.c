#define _GNU_SOURCE
#include "vivarium_rtnetlink.h"

#include <errno.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// MARK: Messages

struct vv_msg {
    char buf[1024];
    struct nlmsghdr *h;
};

static void msg_init(struct vv_msg *m, int type, int flags) {
    memset(m->buf, 0, sizeof m->buf);
    m->h = (struct nlmsghdr *)m->buf;
    m->h->nlmsg_len = NLMSG_LENGTH(0);
    m->h->nlmsg_type = (unsigned short)type;
    m->h->nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
}

static void *msg_tail(struct vv_msg *m) { return m->buf + NLMSG_ALIGN(m->h->nlmsg_len); }

static int msg_put(struct vv_msg *m, const void *data, size_t len) {
    if (NLMSG_ALIGN(m->h->nlmsg_len) + NLMSG_ALIGN(len) > sizeof m->buf) return -EMSGSIZE;
    memcpy(msg_tail(m), data, len);
    m->h->nlmsg_len = (unsigned int)(NLMSG_ALIGN(m->h->nlmsg_len) + len);
    return 0;
}

static struct rtattr *attr_put(struct vv_msg *m, int type, const void *data, size_t len) {
    size_t total = RTA_LENGTH(len);
    if (NLMSG_ALIGN(m->h->nlmsg_len) + RTA_ALIGN(total) > sizeof m->buf) return NULL;
    struct rtattr *a = msg_tail(m);
    a->rta_type = (unsigned short)type;
    a->rta_len = (unsigned short)total;
    if (len) memcpy(RTA_DATA(a), data, len);
    m->h->nlmsg_len = (unsigned int)(NLMSG_ALIGN(m->h->nlmsg_len) + RTA_ALIGN(total));
    return a;
}

static struct rtattr *nest_begin(struct vv_msg *m, int type) { return attr_put(m, type, NULL, 0); }

static void nest_end(struct vv_msg *m, struct rtattr *a) {
    a->rta_len = (unsigned short)((char *)msg_tail(m) - (char *)a);
}

static int name_ok(const char *name) { return name && strlen(name) > 0 && strlen(name) < IFNAMSIZ; }

/// Sends the message and reads until its ack: 0 or the kernel's -errno. A link in the replies (the answer
/// to RTM_GETLINK) leaves its index in *index.
static int transact_link(int sock, struct vv_msg *m, int *index) {
    // Process-wide, so that no two requests share a number (a late ack never matches a later request).
    static unsigned int seq;
    m->h->nlmsg_seq = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(sock, m->buf, m->h->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -errno;
    char reply[8192];
    for (;;) {
        struct sockaddr_nl from;
        socklen_t from_len = sizeof from;
        ssize_t n = recvfrom(sock, reply, sizeof reply, MSG_TRUNC, (struct sockaddr *)&from, &from_len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        }
        if ((size_t)n > sizeof reply) return -EMSGSIZE;
        if (from.nl_pid != 0) continue;  // only the kernel answers
        for (struct nlmsghdr *h = (struct nlmsghdr *)reply; NLMSG_OK(h, (unsigned int)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != m->h->nlmsg_seq) continue;
            if (h->nlmsg_type == RTM_NEWLINK && index) *index = ((struct ifinfomsg *)NLMSG_DATA(h))->ifi_index;
            if (h->nlmsg_type == NLMSG_ERROR) {
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EBADMSG;
                return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
            }
        }
    }
}

static int transact(int sock, struct vv_msg *m) { return transact_link(sock, m, NULL); }

// MARK: Sockets in a namespace

struct open_args {
    int ns_fd, domain, type, protocol;
    int result;
};

static void *open_in_ns(void *p) {
    struct open_args *a = p;
    if (a->ns_fd >= 0 && setns(a->ns_fd, CLONE_NEWNET) < 0) {
        a->result = -errno;
        return NULL;
    }
    int s = socket(a->domain, a->type | SOCK_CLOEXEC, a->protocol);
    a->result = s < 0 ? -errno : s;
    return NULL;
}

int vv_socket_in_ns(int ns_fd, int domain, int type, int protocol) {
    struct open_args a = {.ns_fd = ns_fd, .domain = domain, .type = type, .protocol = protocol, .result = -EINVAL};
    if (ns_fd < 0) {
        open_in_ns(&a);
        return a.result;
    }
    // A thread of its own joins the namespace and ends: the caller's thread never moves.
    pthread_t t;
    int rc = pthread_create(&t, NULL, open_in_ns, &a);
    if (rc != 0) return -rc;
    pthread_join(t, NULL);
    return a.result;
}

int vv_rtnl_open(int ns_fd) {
    int s = vv_socket_in_ns(ns_fd, AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    if (s < 0) return s;
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(s, (struct sockaddr *)&local, sizeof local) < 0) {
        int e = errno;
        close(s);
        return -e;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return s;
}

// MARK: Links

int vv_rtnl_index(int sock, const char *name) {
    if (!name_ok(name)) return -EINVAL;
    struct vv_msg m;
    msg_init(&m, RTM_GETLINK, 0);
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    msg_put(&m, &ifi, sizeof ifi);
    attr_put(&m, IFLA_IFNAME, name, strlen(name) + 1);
    int index = 0;
    int rc = transact_link(sock, &m, &index);
    if (rc < 0) return rc;
    return index > 0 ? index : -ENODEV;
}

int vv_rtnl_bridge(int sock, const char *name) {
    if (!name_ok(name)) return -EINVAL;
    struct vv_msg m;
    msg_init(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    msg_put(&m, &ifi, sizeof ifi);
    attr_put(&m, IFLA_IFNAME, name, strlen(name) + 1);
    struct rtattr *info = nest_begin(&m, IFLA_LINKINFO);
    attr_put(&m, IFLA_INFO_KIND, "bridge", 6);
    nest_end(&m, info);
    return transact(sock, &m);
}

int vv_rtnl_veth(int sock, const char *host_name, int master_index, const char *peer_name, int peer_ns_fd) {
    if (!name_ok(host_name) || !name_ok(peer_name)) return -EINVAL;
    struct vv_msg m;
    msg_init(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    msg_put(&m, &ifi, sizeof ifi);
    attr_put(&m, IFLA_IFNAME, host_name, strlen(host_name) + 1);
    if (master_index > 0) {
        uint32_t master = (uint32_t)master_index;
        attr_put(&m, IFLA_MASTER, &master, sizeof master);
    }
    struct rtattr *info = nest_begin(&m, IFLA_LINKINFO);
    attr_put(&m, IFLA_INFO_KIND, "veth", 4);
    struct rtattr *data = nest_begin(&m, IFLA_INFO_DATA);
    struct rtattr *peer = nest_begin(&m, VETH_INFO_PEER);
    struct ifinfomsg pifi = {.ifi_family = AF_UNSPEC};
    if (msg_put(&m, &pifi, sizeof pifi) < 0) return -EMSGSIZE;
    attr_put(&m, IFLA_IFNAME, peer_name, strlen(peer_name) + 1);
    uint32_t fd = (uint32_t)peer_ns_fd;
    if (!attr_put(&m, IFLA_NET_NS_FD, &fd, sizeof fd)) return -EMSGSIZE;
    nest_end(&m, peer);
    nest_end(&m, data);
    nest_end(&m, info);
    return transact(sock, &m);
}

int vv_rtnl_up(int sock, int index) {
    struct vv_msg m;
    msg_init(&m, RTM_NEWLINK, 0);
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = index, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    msg_put(&m, &ifi, sizeof ifi);
    return transact(sock, &m);
}

int vv_rtnl_delete(int sock, int index) {
    struct vv_msg m;
    msg_init(&m, RTM_DELLINK, 0);
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = index};
    msg_put(&m, &ifi, sizeof ifi);
    return transact(sock, &m);
}

// MARK: Addresses and routes

int vv_rtnl_addr4(int sock, int index, uint32_t address, int prefix) {
    struct vv_msg m;
    msg_init(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    struct ifaddrmsg ifa = {
        .ifa_family = AF_INET, .ifa_prefixlen = (unsigned char)prefix, .ifa_scope = RT_SCOPE_UNIVERSE,
        .ifa_index = (unsigned int)index};
    msg_put(&m, &ifa, sizeof ifa);
    attr_put(&m, IFA_LOCAL, &address, sizeof address);
    attr_put(&m, IFA_ADDRESS, &address, sizeof address);
    return transact(sock, &m);
}

int vv_rtnl_default_route4(int sock, uint32_t gateway) {
    struct vv_msg m;
    // Replace: a default route via another gateway does not survive an attach.
    msg_init(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
    struct rtmsg rt = {
        .rtm_family = AF_INET, .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_BOOT,
        .rtm_scope = RT_SCOPE_UNIVERSE, .rtm_type = RTN_UNICAST};
    msg_put(&m, &rt, sizeof rt);
    attr_put(&m, RTA_GATEWAY, &gateway, sizeof gateway);
    return transact(sock, &m);
}
