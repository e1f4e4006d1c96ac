// Sail's native addon: the few socket calls Node has no API for.
//
// getOriginalDst(fd): the destination a connection had before iptables REDIRECTed it to the proxy.
//
// The kernel keeps it in the connection's conntrack entry; SO_ORIGINAL_DST (IPv4, level SOL_IP)
// and IP6T_SO_ORIGINAL_DST (IPv6, level SOL_IPV6) read it back (netfilter's getorigdst). A socket
// that was not redirected has no such entry (ENOENT), and a kernel without conntrack does not know
// the option (ENOPROTOOPT): both mean "not redirected" and give `undefined`. Anything else (a bad
// fd) throws.
//
// transparentListen(host, port, backlog): a listening TCP socket with IP_TRANSPARENT (IPv4) or
// IPV6_TRANSPARENT (IPv6, dual-stack), which TPROXY needs to hand it connections addressed to
// other hosts' addresses. Setting the option needs CAP_NET_ADMIN (or CAP_NET_RAW): the node agent,
// which runs as root, creates the socket and passes it to the unprivileged proxy, which keeps no
// capability at all. The flag stays with the socket and is inherited by every accepted connection.
//
// transparentSocket(host, mark): an unconnected TCP socket bound to `host` (any address, local or
// not) with IP_TRANSPARENT / IPV6_TRANSPARENT and, when mark > 0, SO_MARK: the proxy's connection
// to a local application that keeps the caller's address as its source (Envoy's original_src).
// The kernel picks the port. The caller wraps it in a net.Socket and connects it. Needs
// CAP_NET_ADMIN: the node agent grants the proxy that one capability in tproxy mode.
//
// dupFd(fd) / closeFd(fd): the proxy listens on a duplicate of the inherited socket, so a listener
// that is closed and bound again (a drain) does not lose it.
#include <node_api.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#ifdef __linux__
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif
// POSIX: dupFd and closeFd.
#include <fcntl.h>
#include <unistd.h>

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif

// From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>, which clash with
// glibc's <netinet/in.h> on some distributions; the values are part of the kernel ABI.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

#define CHECK(env, call)                                                        \
  do {                                                                          \
    if ((call) != napi_ok) {                                                    \
      napi_throw_error((env), NULL, "sail_native: " #call " failed");           \
      return NULL;                                                              \
    }                                                                           \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s failed: %s", what, strerror(err));
  char code[32];
  snprintf(code, sizeof code, "ERRNO_%d", err);
  napi_throw_error(env, code, msg);
  return NULL;
}

// Whether argument `i` is of type `want`; if not, a TypeError "`what` must be `noun`" is thrown.
static bool arg_is(napi_env env, napi_value *argv, size_t argc, size_t i, const char *what,
                   napi_valuetype want, const char *noun) {
  napi_valuetype type = napi_undefined;
  if (i < argc && napi_typeof(env, argv[i], &type) != napi_ok) type = napi_undefined;
  if (type == want) return true;
  char msg[96];
  snprintf(msg, sizeof msg, "%s must be %s", what, noun);
  napi_throw_type_error(env, NULL, msg);
  return false;
}

// Reads argument `i` as a non-negative int32, or throws a TypeError/RangeError naming `what`.
static bool int_arg(napi_env env, napi_value *argv, size_t argc, size_t i, const char *what,
                    int32_t *out) {
  if (!arg_is(env, argv, argc, i, what, napi_number, "a number")) return false;
  if (napi_get_value_int32(env, argv[i], out) != napi_ok || *out < 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must not be negative", what);
    napi_throw_range_error(env, NULL, msg);
    return false;
  }
  return true;
}

// The one fd argument of getOriginalDst, dupFd and closeFd, or false with a TypeError / RangeError thrown.
static bool fd_arg(napi_env env, napi_callback_info info, const char *what, int32_t *fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "sail_native: napi_get_cb_info failed");
    return false;
  }
  return int_arg(env, argv, argc, 0, what, fd);
}

// A number result, or NULL with an exception pending.
static napi_value int32_result(napi_env env, int32_t value) {
  napi_value result;
  CHECK(env, napi_create_int32(env, value, &result));
  return result;
}

// The new socket `fd` as the result; or, when `step` names a call on it that failed (errno set),
// the socket closed and that failure thrown.
static napi_value socket_result(napi_env env, int fd, const char *step) {
  if (step != NULL) {
    int err = errno;
    close(fd);
    return throw_errno(env, step, err);
  }
  return int32_result(env, fd);
}

#ifdef __linux__
static napi_value make_result(napi_env env, const char *address, int port, int family) {
  napi_value obj, v;
  CHECK(env, napi_create_object(env, &obj));
  CHECK(env, napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &v));
  CHECK(env, napi_set_named_property(env, obj, "address", v));
  CHECK(env, napi_create_int32(env, port, &v));
  CHECK(env, napi_set_named_property(env, obj, "port", v));
  CHECK(env, napi_create_int32(env, family, &v));
  CHECK(env, napi_set_named_property(env, obj, "family", v));
  return obj;
}

static int not_redirected(int err) { return err == ENOENT || err == ENOPROTOOPT; }

// SO_ORIGINAL_DST (AF_INET) or IP6T_SO_ORIGINAL_DST (AF_INET6) of `fd`; NULL when not redirected
// or with an exception pending.
static napi_value original_dst(napi_env env, int fd, int family) {
  bool v4 = family == AF_INET;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockopt(fd, v4 ? SOL_IP : SOL_IPV6, v4 ? SO_ORIGINAL_DST : IP6T_SO_ORIGINAL_DST, &ss,
                 &len) != 0) {
    int err = errno;
    if (not_redirected(err)) return NULL;
    return throw_errno(env, v4 ? "getsockopt(SO_ORIGINAL_DST)" : "getsockopt(IP6T_SO_ORIGINAL_DST)",
                       err);
  }
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
  char text[INET6_ADDRSTRLEN];
  if (inet_ntop(family, v4 ? (const void *)&sin->sin_addr : (const void *)&sin6->sin6_addr, text,
                sizeof text) == NULL) {
    return throw_errno(env, "inet_ntop", errno);
  }
  return make_result(env, text, ntohs(v4 ? sin->sin_port : sin6->sin6_port), v4 ? 4 : 6);
}
#endif

static napi_value get_original_dst(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, "getOriginalDst: fd", &fd)) return NULL;
  napi_value result = NULL;
#ifdef __linux__
  // The socket's own family decides the option. An IPv6 socket carrying an IPv4 connection
  // (a v4-mapped local address on a dual-stack listener) was redirected by iptables, not
  // ip6tables, so its entry is an IPv4 one.
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) {
    return throw_errno(env, "getsockname", errno);
  }
  if (local.ss_family == AF_INET6 &&
      !IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr)) {
    result = original_dst(env, fd, AF_INET6);
  } else if (local.ss_family == AF_INET || local.ss_family == AF_INET6) {
    result = original_dst(env, fd, AF_INET);
  }
  bool pending = false;
  CHECK(env, napi_is_exception_pending(env, &pending));
  if (pending) return NULL;
#endif
  if (result == NULL) CHECK(env, napi_get_undefined(env, &result));
  return result;
}

#ifdef __linux__
// Fills `addr` with host:port; the family (AF_INET, AF_INET6), or AF_UNSPEC for a host that is not
// an IP address.
static int parse_address(const char *host, int port, struct sockaddr_storage *addr,
                         socklen_t *addr_len) {
  memset(addr, 0, sizeof *addr);
  struct sockaddr_in *sin = (struct sockaddr_in *)addr;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;
  if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    *addr_len = sizeof *sin;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    *addr_len = sizeof *sin6;
    return AF_INET6;
  }
  return AF_UNSPEC;
}

static napi_value throw_bad_host(napi_env env, const char *fn, const char *host) {
  char msg[INET6_ADDRSTRLEN + 80];
  snprintf(msg, sizeof msg, "%s: host %s is not an IPv4 or IPv6 address", fn, host);
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

// Sets IP_TRANSPARENT or IPV6_TRANSPARENT; NULL, or the name of the call that failed (errno set).
static const char *set_transparent(int fd, int family) {
  int one = 1;
  if (family == AF_INET) {
    return setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) == 0
               ? NULL
               : "setsockopt(IP_TRANSPARENT)";
  }
  return setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one) == 0
             ? NULL
             : "setsockopt(IPV6_TRANSPARENT)";
}
#endif

// Reads argument `i` as a string of at most INET6_ADDRSTRLEN characters into `out`, or throws a
// TypeError naming `what`.
static bool host_arg(napi_env env, napi_value *argv, size_t argc, size_t i, const char *what,
                     char out[INET6_ADDRSTRLEN + 1]) {
  if (!arg_is(env, argv, argc, i, what, napi_string, "a string")) return false;
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[i], out, INET6_ADDRSTRLEN + 1, &len) != napi_ok) {
    napi_throw_error(env, NULL, "sail_native: napi_get_value_string_utf8 failed");
    return false;
  }
  return true;
}

static napi_value transparent_listen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char host[INET6_ADDRSTRLEN + 1];
  if (!host_arg(env, argv, argc, 0, "transparentListen: host", host)) return NULL;
  int32_t port, backlog;
  if (!int_arg(env, argv, argc, 1, "transparentListen: port", &port)) return NULL;
  if (!int_arg(env, argv, argc, 2, "transparentListen: backlog", &backlog)) return NULL;
  if (port > 65535) {
    napi_throw_range_error(env, NULL, "transparentListen: port must be at most 65535");
    return NULL;
  }
#ifdef __linux__
  struct sockaddr_storage addr;
  socklen_t addr_len;
  int family = parse_address(host, port, &addr, &addr_len);
  if (family == AF_UNSPEC) return throw_bad_host(env, "transparentListen", host);
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1, zero = 0;
  const char *step = NULL;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    step = "setsockopt(SO_REUSEADDR)";
  } else if (family == AF_INET6 && setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, &zero, sizeof zero) != 0) {
    step = "setsockopt(IPV6_V6ONLY)";
  } else if ((step = set_transparent(fd, family)) != NULL) {
    // step names the failed call
  } else if (bind(fd, (struct sockaddr *)&addr, addr_len) != 0) {
    step = "bind";
  } else if (listen(fd, backlog) != 0) {
    step = "listen";
  }
  return socket_result(env, fd, step);
#else
  napi_throw_error(env, NULL, "transparentListen: IP_TRANSPARENT is Linux only");
  return NULL;
#endif
}

static napi_value transparent_socket(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char host[INET6_ADDRSTRLEN + 1];
  if (!host_arg(env, argv, argc, 0, "transparentSocket: host", host)) return NULL;
  int32_t mark;
  if (!int_arg(env, argv, argc, 1, "transparentSocket: mark", &mark)) return NULL;
#ifdef __linux__
  struct sockaddr_storage addr;
  socklen_t addr_len;
  int family = parse_address(host, 0, &addr, &addr_len);
  if (family == AF_UNSPEC) return throw_bad_host(env, "transparentSocket", host);
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return throw_errno(env, "socket", errno);
  const char *step = set_transparent(fd, family);
  if (step == NULL && mark > 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    step = "setsockopt(SO_MARK)";
  }
  if (step == NULL && bind(fd, (struct sockaddr *)&addr, addr_len) != 0) step = "bind";
  return socket_result(env, fd, step);
#else
  napi_throw_error(env, NULL, "transparentSocket: IP_TRANSPARENT is Linux only");
  return NULL;
#endif
}

static napi_value dup_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, "dupFd: fd", &fd)) return NULL;
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return throw_errno(env, "fcntl(F_DUPFD_CLOEXEC)", errno);
  return int32_result(env, copy);
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, "closeFd: fd", &fd)) return NULL;
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, "close", errno);
  napi_value result;
  CHECK(env, napi_get_undefined(env, &result));
  return result;
}

static bool export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, name, fn) == napi_ok;
}

NAPI_MODULE_INIT() {
  if (!export_fn(env, exports, "getOriginalDst", get_original_dst) ||
      !export_fn(env, exports, "transparentListen", transparent_listen) ||
      !export_fn(env, exports, "transparentSocket", transparent_socket) ||
      !export_fn(env, exports, "dupFd", dup_fd) || !export_fn(env, exports, "closeFd", close_fd)) {
    napi_throw_error(env, NULL, "sail_native: exporting the functions failed");
    return NULL;
  }
  return exports;
}
