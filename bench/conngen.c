/*
 * Connection-setup load generator for bench/run.mjs (compiled at run time with the system's cc; the bench falls
 * back to the Node generator when there is none). One process, one epoll loop, no allocation per connection
 * beyond its slot: the cost of a connection here is a few system calls, so the generator is not what limits the
 * rate it measures (the Node generator spent more CPU per connection than the broker did).
 *
 *   conngen HOST PORT COUNT CONCURRENCY ID_PREFIX [LEVEL]
 *
 * Opens COUNT TCP connections, CONCURRENCY at a time; each sends an MQTT CONNECT (level LEVEL: 4, 3.1.1, the
 * default, or 5 with an empty property list; clean session, keepalive 60 s, client ID "ID_PREFIX-i") and waits for
 * a CONNACK with return code 0. Prints one JSON line:
 *   {"connected":N,"failed":N,"elapsedMs":T,"connectP50Ms":T,"connectP99Ms":T,"cpuMs":T,"errors":{...}}
 * then holds every connection until a line (or EOF) arrives on stdin, sends DISCONNECT, closes them and exits.
 * Every wait is bounded: a connection without its CONNACK after 15 s counts as failed.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNACK_TIMEOUT_S 15.0
#define MAX_ID 200

enum { SLOT_FREE, SLOT_CONNECTING, SLOT_WAITING };

struct slot {
  int fd;
  int state;
  int index;    /* client number */
  int got;      /* CONNACK bytes read so far */
  unsigned char connack[64]; /* 20 02 flags rc; at 5.0 20 LEN flags rc PROPERTIES (mosquitto's are ~10 bytes) */
  double started;
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, int n, double p) {
  int i = (int)((p / 100.0) * (n - 1) + 0.5);
  return sorted[i];
}

/* Error counts by errno name (a handful of kinds at most). */
#define MAX_ERRKINDS 8
static const char *err_names[MAX_ERRKINDS];
static int err_counts[MAX_ERRKINDS];
static void count_error(const char *name) {
  for (int i = 0; i < MAX_ERRKINDS; i++) {
    if (err_names[i] == NULL) { err_names[i] = name; err_counts[i] = 1; return; }
    if (strcmp(err_names[i], name) == 0) { err_counts[i]++; return; }
  }
}

static int level = 4;

static int build_connect(unsigned char *pkt, const char *prefix, int index) {
  char id[MAX_ID];
  int idlen = snprintf(id, sizeof id, "%s-%d", prefix, index);
  if (idlen < 0 || idlen >= (int)sizeof id) return -1;
  int props = level == 5 ? 1 : 0; /* 5.0: a Property Length of 0 */
  int remaining = 10 + props + 2 + idlen; /* variable header + client ID field */
  int p = 0;
  pkt[p++] = 0x10;
  if (remaining >= 128) { pkt[p++] = (unsigned char)(0x80 | (remaining & 0x7f)); pkt[p++] = (unsigned char)(remaining >> 7); }
  else pkt[p++] = (unsigned char)remaining;
  static const unsigned char vh[10] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60};
  memcpy(pkt + p, vh, sizeof vh);
  pkt[p + 6] = (unsigned char)level;
  p += sizeof vh;
  if (props) pkt[p++] = 0;
  pkt[p++] = (unsigned char)(idlen >> 8);
  pkt[p++] = (unsigned char)(idlen & 0xff);
  memcpy(pkt + p, id, (size_t)idlen);
  return p + idlen;
}

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: %s HOST PORT COUNT CONCURRENCY ID_PREFIX [LEVEL]\n", argv[0]);
    return 2;
  }
  if (argc == 7) level = atoi(argv[6]);
  if (level != 4 && level != 5) { fprintf(stderr, "conngen: LEVEL is 4 or 5\n"); return 2; }
  const char *host = argv[1], *prefix = argv[5];
  int port = atoi(argv[2]), count = atoi(argv[3]), concurrency = atoi(argv[4]);
  if (port <= 0 || count <= 0 || concurrency <= 0) { fprintf(stderr, "conngen: bad arguments\n"); return 2; }
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "conngen: %s is not an IPv4 address\n", host); return 2; }

  struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
  int *held = malloc(sizeof(int) * (size_t)count);
  double *latencies = malloc(sizeof(double) * (size_t)count);
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (slots == NULL || held == NULL || latencies == NULL || epfd < 0) { perror("conngen: setup"); return 1; }

  int next = 0, connected = 0, failed = 0, inflight = 0, nheld = 0;
  unsigned char pkt[MAX_ID + 32];
  struct epoll_event events[256];
  double t0 = now_s();

  while (connected + failed < count) {
    /* Fill free slots with new connections. */
    for (int s = 0; s < concurrency && next < count; s++) {
      if (slots[s].state != SLOT_FREE) continue;
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) { count_error(strerrorname_np(errno)); failed++; next++; continue; }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      slots[s] = (struct slot){ .fd = fd, .state = SLOT_CONNECTING, .index = next++, .started = now_s() };
      if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        count_error(strerrorname_np(errno));
        close(fd);
        slots[s].state = SLOT_FREE;
        failed++;
        continue;
      }
      struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = (unsigned)s };
      epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
      inflight++;
    }
    if (inflight == 0) continue;
    int n = epoll_wait(epfd, events, 256, 1000);
    double t = now_s();
    for (int i = 0; i < n; i++) {
      struct slot *sl = &slots[events[i].data.u32];
      int done = 0, ok = 0;
      if (sl->state == SLOT_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(sl->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        int plen = build_connect(pkt, prefix, sl->index);
        if (err != 0) { count_error(strerrorname_np(err)); done = 1; }
        else if (plen < 0 || write(sl->fd, pkt, (size_t)plen) != plen) { count_error("ECONNECTWRITE"); done = 1; }
        else {
          sl->state = SLOT_WAITING;
          struct epoll_event ev = { .events = EPOLLIN, .data.u32 = events[i].data.u32 };
          epoll_ctl(epfd, EPOLL_CTL_MOD, sl->fd, &ev);
        }
      } else if (sl->state == SLOT_WAITING) {
        /* As much as comes (nothing follows a CONNACK until the client sends more): one read, as a rule. */
        ssize_t r = read(sl->fd, sl->connack + sl->got, sizeof sl->connack - (size_t)sl->got);
        if (r > 0) {
          sl->got += (int)r;
          /* A one-byte Remaining Length (< 62 here): 20 02 flags rc, or at 5.0 20 LEN flags rc PROPERTIES. */
          int whole = sl->got >= 2 && sl->got >= 2 + (sl->connack[1] & 0x7f);
          if (whole || sl->got == (int)sizeof sl->connack) {
            done = 1;
            ok = whole && sl->connack[0] == 0x20 && (sl->connack[1] == 2 || (level == 5 && sl->connack[1] < 0x80)) && sl->got == 2 + sl->connack[1] && sl->connack[3] == 0;
            if (!ok) count_error("EBADCONNACK");
          }
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          count_error(r == 0 ? "ECLOSED" : strerrorname_np(errno));
          done = 1;
        }
      }
      if (!done) continue;
      epoll_ctl(epfd, EPOLL_CTL_DEL, sl->fd, NULL);
      inflight--;
      if (ok) {
        latencies[connected++] = (t - sl->started) * 1000.0;
        held[nheld++] = sl->fd;
      } else {
        close(sl->fd);
        failed++;
      }
      sl->state = SLOT_FREE;
    }
    /* Bounded: a connection without its CONNACK in time is a failure, not a hang. */
    for (int s = 0; s < concurrency; s++) {
      if (slots[s].state == SLOT_FREE || t - slots[s].started < CONNACK_TIMEOUT_S) continue;
      count_error("ETIMEDOUT");
      epoll_ctl(epfd, EPOLL_CTL_DEL, slots[s].fd, NULL);
      close(slots[s].fd);
      slots[s].state = SLOT_FREE;
      inflight--;
      failed++;
    }
  }
  double elapsed = (now_s() - t0) * 1000.0;
  qsort(latencies, (size_t)connected, sizeof(double), cmp_double);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu_ms = ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 + ru.ru_stime.tv_sec * 1e3 + ru.ru_stime.tv_usec / 1e3;
  char p50[32] = "null", p99[32] = "null";
  if (connected > 0) {
    snprintf(p50, sizeof p50, "%.3f", percentile(latencies, connected, 50));
    snprintf(p99, sizeof p99, "%.3f", percentile(latencies, connected, 99));
  }
  printf("{\"connected\":%d,\"failed\":%d,\"elapsedMs\":%.3f,\"connectP50Ms\":%s,\"connectP99Ms\":%s,\"cpuMs\":%.1f,\"errors\":{",
         connected, failed, elapsed, p50, p99, cpu_ms);
  for (int i = 0; i < MAX_ERRKINDS && err_names[i] != NULL; i++) printf("%s\"%s\":%d", i ? "," : "", err_names[i], err_counts[i]);
  printf("}}\n");
  fflush(stdout);

  /* Hold until told (or stdin closes), then DISCONNECT and close: the teardown is not timed. */
  char line[16];
  if (read(0, line, sizeof line) < 0) { /* EOF or error: release anyway */ }
  static const unsigned char disconnect[2] = {0xe0, 0x00};
  for (int i = 0; i < nheld; i++) {
    if (write(held[i], disconnect, sizeof disconnect) < 0) { /* the peer may be gone: close anyway */ }
    close(held[i]);
  }
  return 0;
}
