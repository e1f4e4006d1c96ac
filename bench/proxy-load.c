/*
 * Open-loop HTTP/1.1 load at a fixed rate, for bench/proxy.ts (compiled there with `cc -O2`).
 *
 * wrk2 is not in Debian, and h2load's --rps sends in bursts (its per-client timer catches up
 * several requests at once), which measures queueing behind the burst rather than a proxy's
 * latency. This sends request i at exactly t0 + i/RATE (a timerfd with an absolute monotonic
 * deadline), each on an idle keep-alive connection from a pool; when none is idle the request waits
 * for one and its latency still counts from its intended send time (no coordinated omission).
 *
 * Usage: proxy-load IP PORT HOST PATH RATE SECONDS CONNECTIONS
 * Prints one JSON object: sent, ok, errors, late (requests that found no idle connection), and
 * latency percentiles in microseconds, from the intended send time (`latency`) and from the actual
 * write (`service`).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

typedef struct {
  int fd;
  int busy;              /* a request is in flight */
  long long intended;    /* its intended send time, ns */
  long long written;     /* when it was written, ns */
  char buf[BUF];
  size_t len;
} conn_t;

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

static struct sockaddr_in addr;
static char request[1024];
static size_t request_len;

static int dial(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Length of a complete response at the start of c->buf, 0 when incomplete, -1 when malformed. */
static long complete(conn_t *c) {
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (!end) return 0;
  size_t head = (size_t)(end - c->buf) + 4;
  if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0) return -1;
  char *cl = memmem(c->buf, head, "ontent-Length:", 14);
  if (!cl) cl = memmem(c->buf, head, "ontent-length:", 14);
  if (cl) {
    long n = strtol(cl + 14, NULL, 10);
    return c->len >= head + (size_t)n ? (long)(head + n) : 0;
  }
  /* chunked: walk the chunks */
  size_t p = head;
  for (;;) {
    char *nl = memmem(c->buf + p, c->len - p, "\r\n", 2);
    if (!nl) return 0;
    long n = strtol(c->buf + p, NULL, 16);
    p = (size_t)(nl - c->buf) + 2;
    if (n == 0) return c->len >= p + 2 ? (long)(p + 2) : 0;
    p += (size_t)n + 2;
    if (p > c->len) return 0;
  }
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: %s IP PORT HOST PATH RATE SECONDS CONNECTIONS\n", argv[0]);
    return 2;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[2]));
  inet_pton(AF_INET, argv[1], &addr.sin_addr);
  request_len = (size_t)snprintf(request, sizeof request,
                                 "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sail-bench\r\n\r\n",
                                 argv[4], argv[3]);
  double rate = atof(argv[5]);
  double seconds = atof(argv[6]);
  int nconn = atoi(argv[7]);
  long total = (long)(rate * seconds);
  long long period = (long long)(1e9 / rate);

  conn_t *conns = calloc((size_t)nconn, sizeof *conns);
  long long *lat = calloc((size_t)total, sizeof *lat);
  long long *svc = calloc((size_t)total, sizeof *svc);
  long long *queue = calloc((size_t)total, sizeof *queue); /* intended times of waiting requests */
  long qhead = 0, qtail = 0;
  int ep = epoll_create1(0);
  for (int i = 0; i < nconn; i++) {
    conns[i].fd = dial();
    if (conns[i].fd < 0) {
      perror("connect");
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
  }
  int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

  long sent = 0, done = 0, ok = 0, errors = 0, late = 0;
  long long t0 = now_ns() + 10000000LL;
  struct itimerspec its = {0};
  its.it_value.tv_sec = t0 / 1000000000LL;
  its.it_value.tv_nsec = t0 % 1000000000LL;
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
  long long deadline = t0 + (long long)(seconds * 1e9) + 10000000000LL;

  while (done < total && now_ns() < deadline) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, 1000);
    for (int e = 0; e < n; e++) {
      conn_t *c = evs[e].data.ptr;
      if (c == NULL) {
        uint64_t x;
        if (read(tfd, &x, sizeof x) < 0) continue;
        /* every request whose time has come joins the queue */
        long long t = now_ns();
        while (sent < total && t0 + sent * period <= t) queue[qtail++] = t0 + (sent++) * period;
        if (sent < total) {
          long long next = t0 + sent * period;
          its.it_value.tv_sec = next / 1000000000LL;
          its.it_value.tv_nsec = next % 1000000000LL;
          timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
      } else {
        ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
        if (r <= 0) {
          if (r < 0 && errno == EAGAIN) continue;
          /* closed or failed: count the request in flight, reconnect */
          if (c->busy) {
            errors++;
            done++;
            c->busy = 0;
          }
          epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
          close(c->fd);
          c->len = 0;
          c->fd = dial();
          if (c->fd < 0) {
            perror("reconnect");
            return 1;
          }
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
          continue;
        }
        c->len += (size_t)r;
        long m = complete(c);
        if (m == 0 && c->len < BUF) continue;
        long long t = now_ns();
        if (c->busy) {
          if (m > 0) {
            lat[ok] = t - c->intended;
            svc[ok] = t - c->written;
            ok++;
          } else {
            errors++;
          }
          done++;
          c->busy = 0;
        }
        if (m > 0) {
          memmove(c->buf, c->buf + m, c->len - (size_t)m);
          c->len -= (size_t)m;
        } else {
          c->len = 0;
        }
      }
    }
    /* hand waiting requests to idle connections */
    for (int i = 0; i < nconn && qhead < qtail; i++) {
      conn_t *c = &conns[i];
      if (c->busy) continue;
      c->intended = queue[qhead++];
      c->written = now_ns();
      if (c->written - c->intended > period) late++;
      if (write(c->fd, request, request_len) != (ssize_t)request_len) {
        errors++;
        done++;
        continue;
      }
      c->busy = 1;
    }
  }
  qsort(lat, (size_t)ok, sizeof *lat, cmp_ll);
  qsort(svc, (size_t)ok, sizeof *svc, cmp_ll);
#define Q(a, q) (ok ? (a)[(long)((q) * (ok - 1))] / 1000.0 : -1.0)
  printf("{\"sent\":%ld,\"ok\":%ld,\"errors\":%ld,\"late\":%ld,\"seconds\":%.3f,", sent, ok, errors,
         late, (now_ns() - t0) / 1e9);
  printf("\"latency\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},",
         Q(lat, 0.5), Q(lat, 0.9), Q(lat, 0.99), Q(lat, 0.999), Q(lat, 1.0));
  printf("\"service\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}}\n",
         Q(svc, 0.5), Q(svc, 0.9), Q(svc, 0.99), Q(svc, 0.999), Q(svc, 1.0));
  return errors ? 3 : 0;
}
