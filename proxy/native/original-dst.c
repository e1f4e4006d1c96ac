// getOriginalDst(fd): the destination a connection had before iptables REDIRECTed it to the proxy.
//
// The kernel keeps it in the connection's conntrack entry; SO_ORIGINAL_DST (IPv4, level SOL_IP)
// and IP6T_SO_ORIGINAL_DST (IPv6, level SOL_IPV6) read it back (netfilter's getorigdst). A socket
// that was not redirected has no such entry (ENOENT), and a kernel without conntrack does not know
// the option (ENOPROTOOPT): both mean "not redirected" and give `undefined`. Anything else (a bad
// fd) throws.
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

static napi_value original_dst_v4(napi_env env, int fd) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  memset(&sin, 0, sizeof sin);
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sin, &len) != 0) {
    int err = errno;
    if (not_redirected(err)) return NULL;
    return throw_errno(env, "getsockopt(SO_ORIGINAL_DST)", err);
  }
  char text[INET_ADDRSTRLEN];
  if (inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text) == NULL) {
    return throw_errno(env, "inet_ntop", errno);
  }
  return make_result(env, text, ntohs(sin.sin_port), 4);
}

static napi_value original_dst_v6(napi_env env, int fd) {
  struct sockaddr_in6 sin6;
  socklen_t len = sizeof sin6;
  memset(&sin6, 0, sizeof sin6);
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sin6, &len) != 0) {
    int err = errno;
    if (not_redirected(err)) return NULL;
    return throw_errno(env, "getsockopt(IP6T_SO_ORIGINAL_DST)", err);
  }
  char text[INET6_ADDRSTRLEN];
  if (inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof text) == NULL) {
    return throw_errno(env, "inet_ntop", errno);
  }
  return make_result(env, text, ntohs(sin6.sin6_port), 6);
}
#endif

static napi_value get_original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype type = napi_undefined;
  if (argc >= 1) CHECK(env, napi_typeof(env, argv[0], &type));
  if (type != napi_number) {
    napi_throw_type_error(env, NULL, "getOriginalDst: fd must be a number");
    return NULL;
  }
  int32_t fd;
  CHECK(env, napi_get_value_int32(env, argv[0], &fd));
  if (fd < 0) {
    napi_throw_range_error(env, NULL, "getOriginalDst: fd must not be negative");
    return NULL;
  }
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
    result = original_dst_v6(env, fd);
  } else if (local.ss_family == AF_INET || local.ss_family == AF_INET6) {
    result = original_dst_v4(env, fd);
  }
  bool pending = false;
  CHECK(env, napi_is_exception_pending(env, &pending));
  if (pending) return NULL;
#endif
  if (result == NULL) CHECK(env, napi_get_undefined(env, &result));
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  CHECK(env, napi_create_function(env, "getOriginalDst", NAPI_AUTO_LENGTH, get_original_dst, NULL,
                                  &fn));
  CHECK(env, napi_set_named_property(env, exports, "getOriginalDst", fn));
  return exports;
}
