/* One process's session with its vGPU worker (client.h): finding the channel as
 * kvmgpu_guest/channel.py does, the handshake, and `kvmgpu_call`. One lock around the channel:
 * a call is sent and its reply read before the next call goes out. */
#define _GNU_SOURCE
#include "client.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "kvmgpu_copier.h"
#include "sha256.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kvmgpu's frames are little-endian and laid out by memcpy: a little-endian guest only"
#endif

#define PORT_NAME "org.kvmgpu.0"
#define AGENT_SOCKET "/run/kvmgpu-guest/agent.sock" /* kvmgpu_guest/agent.py AGENT_SOCKET */
#define SHARED_WINDOW_PART 16 /* through the agent a session asks for 1/16 of the region (client.py) */
#define LIB_VERSION "0.1.0"

/* The mailbox's words (u32 indexes; kvmgpu_wire/mailbox.py) and its two halves. */
enum { BOX_POST = KVMGPU_MAILBOX_POST, BOX_SIZE = KVMGPU_MAILBOX_SIZE, BOX_ASLEEP = KVMGPU_MAILBOX_ASLEEP,
       BOX_ANSWER = KVMGPU_MAILBOX_ANSWER, BOX_LENGTH = KVMGPU_MAILBOX_LENGTH, BOX_AWAKE = KVMGPU_MAILBOX_AWAKE };
#define BOX_HEAD KVMGPU_MAILBOX_HEAD
#define BOX_REQUEST_MAX KVMGPU_MAILBOX_REQUEST_MAX
#define BOX_REPLY_MAX (KVMGPU_MAILBOX_BYTES - BOX_HEAD - BOX_REQUEST_MAX)

void kvmgpu_log(const char *fmt, ...)
{
    const char *level = getenv("KVMGPU_LOG");
    if (level && (!strcmp(level, "0") || !strcmp(level, "off") || !strcmp(level, "quiet")))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kvmgpu: %s\n", line);
}

int kvmgpu_tracing(void)
{
    const char *level = getenv("KVMGPU_LOG");
    return level && !strcmp(level, "trace");
}

void kvmgpu_client_lock(struct kvmgpu_client *c)
{
    pthread_mutex_lock(&c->lock);
}

void kvmgpu_client_unlock(struct kvmgpu_client *c)
{
    pthread_mutex_unlock(&c->lock);
}

/* --- settings (the same KVMGPU_* variables as the Python client's: kvmgpu_guest/config.py) ------ */

/* `name`'s value from `low` to `high`, else `fallback` when unset; -1 with a message when bad. */
static int setting(const char *name, unsigned long long low, unsigned long long high, unsigned long long fallback,
                   unsigned long long *out, char *err, size_t errlen)
{
    const char *text = getenv(name);
    *out = fallback;
    if (!text || !*text)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || *text == '-' || v < low || v > high) {
        snprintf(err, errlen, "%s=%.40s is not a whole number from %llu to %llu: fix or unset it", name, text, low,
                 high);
        return -1;
    }
    *out = v;
    return 0;
}

/* A yes/no setting: 1/0, yes/no, true/false, on/off (as kvmgpu_guest/config.py reads them). */
static int flag(const char *name, int fallback, int *out, char *err, size_t errlen)
{
    static const char *const yes[] = {"1", "yes", "true", "on"}, *const no[] = {"0", "no", "false", "off"};
    const char *text = getenv(name);
    *out = fallback;
    if (!text || !*text)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(text, yes[i]) || !strcasecmp(text, no[i])) {
            *out = !strcasecmp(text, yes[i]);
            return 0;
        }
    }
    snprintf(err, errlen, "%s=%.40s is not 0 or 1 (or yes/no, true/false, on/off): fix or unset it", name, text);
    return -1;
}

static int read_settings(struct kvmgpu_client *c, char *err, size_t errlen)
{
    unsigned long long batch, first, poll, pipe_min, pipe_chunk, split, threads, spin;
    int mailbox, copier;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (setting("KVMGPU_BATCH_BYTES", 1, 16 << 20, 4096, &batch, err, errlen) ||
        setting("KVMGPU_FIRST_BATCH", 1, 16 << 20, 512, &first, err, errlen) ||
        setting("KVMGPU_POLL_US", 0, 1000000, 50, &poll, err, errlen) ||
        flag("KVMGPU_MAILBOX", 1, &mailbox, err, errlen) ||
        setting("KVMGPU_PIPE_MIN", 1, SIZE_MAX, 1 << 20, &pipe_min, err, errlen) ||
        setting("KVMGPU_PIPE_CHUNK", 1, SIZE_MAX, 16 << 20, &pipe_chunk, err, errlen) ||
        flag("KVMGPU_COPIER", 1, &copier, err, errlen) ||
        setting("KVMGPU_COPIER_THREADS", 1, 16, cpus > 0 && cpus < 8 ? (unsigned long long)cpus : 8, &threads, err,
                errlen) ||
        setting("KVMGPU_COPY_SPLIT", 1, SIZE_MAX, 64 << 10, &split, err, errlen) ||
        setting("KVMGPU_COPY_SPIN_US", 0, 1000000, 200, &spin, err, errlen))
        return -1;
    c->pipe_min = pipe_min;
    c->pipe_chunk = pipe_chunk;
    c->copy_split = split;
    c->copier = copier && threads > 1;
    if (c->copier)
        kvmgpu_copier_configure((int)threads - 1, (long)spin);
    c->batch_bytes = batch;
    c->first_batch = first < batch ? first : batch;
    c->poll_us = (unsigned)poll;
    c->want_box = mailbox;
    return 0;
}

/* --- the region and the channel --------------------------------------------------------------- */

static int map_region(struct kvmgpu_client *c, int fd, size_t size, const char *what, char *err, size_t errlen)
{
    if (size == 0) {
        snprintf(err, errlen, "shared region %s is empty", what);
        return -1;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot map shared region %s: %s", what, strerror(errno));
        return -1;
    }
    c->region = p;
    c->region_size = size;
    return 0;
}

static int map_file(struct kvmgpu_client *c, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open shared region %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) != 0)
        snprintf(err, errlen, "cannot stat shared region %s: %s", path, strerror(errno));
    else
        rc = map_region(c, fd, (size_t)st.st_size, path, err, errlen);
    close(fd);
    return rc;
}

static int connect_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        snprintf(err, errlen, "socket path %s is too long", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* The guest agent's socket: it sends the region's size with the region's fd (agent.py). */
static int via_agent(struct kvmgpu_client *c, const char *path, char *err, size_t errlen)
{
    int fd = connect_unix(path, err, errlen);
    if (fd < 0) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (the guest agent)");
        return -1;
    }
    struct kvmgpu_agent_region_info info;
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&info, sizeof info};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t got;
    do
        got = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    struct cmsghdr *cm = got == (ssize_t)sizeof info ? CMSG_FIRSTHDR(&msg) : NULL;
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
        cm->cmsg_len != CMSG_LEN(sizeof(int))) {
        snprintf(err, errlen, "the kvmgpu guest agent at %s did not hand over the shared region", path);
        close(fd);
        return -1;
    }
    int region_fd;
    memcpy(&region_fd, CMSG_DATA(cm), sizeof region_fd);
    char what[300];
    snprintf(what, sizeof what, "%s (agent)", path);
    int rc = map_region(c, region_fd, (size_t)info.size, what, err, errlen);
    close(region_fd);
    if (rc) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->is_socket = 1;
    c->shared = 1;
    return 0;
}

static int read_file(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return 0;
}

/* The virtio-serial port's node: the udev link, else the vportNpM whose name matches. */
static int find_port(char *out, size_t len)
{
    snprintf(out, len, "/dev/virtio-ports/" PORT_NAME);
    if (access(out, F_OK) == 0)
        return 0;
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return -1;
    struct dirent *e;
    int rc = -1;
    while (rc && (e = readdir(d))) {
        char path[512], name[128];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        if (read_file(path, name, sizeof name) == 0 && strcmp(name, PORT_NAME) == 0) {
            snprintf(out, len, "/dev/%s", e->d_name);
            rc = access(out, F_OK);
        }
    }
    closedir(d);
    return rc;
}

/* BAR2 of the first ivshmem-plain PCI device (1af4:1110). */
static int find_ivshmem(char *out, size_t len)
{
    DIR *d = opendir("/sys/bus/pci/devices");
    if (!d)
        return -1;
    struct dirent *e;
    int rc = -1;
    while (rc && (e = readdir(d))) {
        char path[512], vendor[32], device[32];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vendor", e->d_name);
        if (read_file(path, vendor, sizeof vendor))
            continue;
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/device", e->d_name);
        if (read_file(path, device, sizeof device))
            continue;
        if (strtol(vendor, NULL, 16) == 0x1af4 && strtol(device, NULL, 16) == 0x1110) {
            snprintf(out, len, "/sys/bus/pci/devices/%s/resource2", e->d_name);
            rc = 0;
        }
    }
    closedir(d);
    return rc;
}

static int find_channel(struct kvmgpu_client *c, char *err, size_t errlen)
{
    const char *sock = getenv("KVMGPU_SOCKET"), *shm = getenv("KVMGPU_SHM");
    if (sock && *sock) {
        if (!shm || !*shm) {
            snprintf(err, errlen, "a control socket is named (%s) but no shared region (set KVMGPU_SHM)", sock);
            return -1;
        }
        if (map_file(c, shm, err, errlen))
            return -1;
        c->fd = connect_unix(sock, err, errlen);
        c->is_socket = 1;
        return c->fd < 0 ? -1 : 0;
    }
    const char *agent = getenv("KVMGPU_AGENT_SOCKET");
    if (!agent || !*agent)
        agent = AGENT_SOCKET;
    if (access(agent, F_OK) == 0)
        return via_agent(c, agent, err, errlen);
    char port[300], bar[300];
    int no_port = find_port(port, sizeof port), no_bar = find_ivshmem(bar, sizeof bar);
    if (no_port || no_bar) {
        snprintf(err, errlen, "no vGPU found: missing %s%s%s (and no guest agent at %s); outside a VM set "
                 "KVMGPU_SOCKET and KVMGPU_SHM",
                 no_port ? "virtio-serial port " PORT_NAME " (/dev/virtio-ports/" PORT_NAME ")" : "",
                 no_port && no_bar ? " and " : "",
                 no_bar ? "ivshmem-plain PCI device 1af4:1110 (in /sys/bus/pci/devices)" : "", agent);
        return -1;
    }
    if (map_file(c, bar, err, errlen))
        return -1;
    c->fd = open(port, O_RDWR | O_CLOEXEC);
    if (c->fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", port, strerror(errno));
        return -1;
    }
    c->is_socket = 0;
    return 0;
}

/* --- frames ------------------------------------------------------------------------------------ */

static void lose(struct kvmgpu_client *c, const char *why)
{
    if (!c->dead)
        kvmgpu_log("lost the channel to the host: %s", why);
    c->dead = 1;
}

static int send_all(struct kvmgpu_client *c, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n) {
        ssize_t w = c->is_socket ? send(c->fd, p, n, MSG_NOSIGNAL) : write(c->fd, p, n);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w <= 0) {
            lose(c, w < 0 ? strerror(errno) : "the channel took no bytes");
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int recv_all(struct kvmgpu_client *c, void *data, size_t n)
{
    uint8_t *p = data;
    while (n) {
        ssize_t r = read(c->fd, p, n);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) {
            lose(c, r < 0 ? strerror(errno) : "the host closed the channel");
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The next frame: its header, its payload in c->frame (at most `limit` bytes). */
static int next_frame(struct kvmgpu_client *c, struct kvmgpu_frame_header *h, uint32_t limit)
{
    if (recv_all(c, h, sizeof *h))
        return -1;
    if (h->magic != KVMGPU_MAGIC) {
        lose(c, "bad frame magic (not a kvmgpu worker?)");
        return -1;
    }
    if (h->length > limit) {
        lose(c, "a frame over the negotiated size");
        return -1;
    }
    return recv_all(c, c->frame, h->length);
}

static int send_frame(struct kvmgpu_client *c, uint8_t kind, const void *payload, uint32_t len)
{
    struct kvmgpu_frame_header h = {KVMGPU_MAGIC, kind, 0, c->session, 0, len};
    if (send_all(c, &h, sizeof h))
        return -1;
    return len ? send_all(c, payload, len) : 0;
}

/* --- the handshake ----------------------------------------------------------------------------- */

static int parse_uuid(const char *text, uint8_t out[16])
{
    int n = 0;
    if (!strncmp(text, "GPU-", 4) || !strncmp(text, "MIG-", 4))
        text += 4;
    memset(out, 0, 16);
    for (; *text && n < 32; text++) {
        int v = *text >= '0' && *text <= '9' ? *text - '0' : *text >= 'a' && *text <= 'f' ? *text - 'a' + 10
              : *text >= 'A' && *text <= 'F' ? *text - 'A' + 10 : -1;
        if (v < 0)
            continue;
        out[n / 2] |= (uint8_t)(n % 2 ? v : v << 4);
        n++;
    }
    return 0;
}

/* The WELCOME's fields this library uses; -1 with a message when one is missing or bad. */
static int read_welcome(struct kvmgpu_client *c, const struct json *w, uint32_t asked_frame, char *err, size_t errlen)
{
    int64_t version, max_frame, offset, size, channel_session = 0, v;
    if (!json_int(json_get(w, "version"), 0, UINT32_MAX, &version)) {
        snprintf(err, errlen, "the host's WELCOME has no protocol version");
        return -1;
    }
    if (version != KVMGPU_PROTOCOL_VERSION) {
        snprintf(err, errlen, "the host speaks protocol %lld, this library %d: install matching kvmgpu and "
                 "kvmgpu-guest versions", (long long)version, KVMGPU_PROTOCOL_VERSION);
        return -1;
    }
    if (!json_int(json_get(w, "max_frame"), 4096, asked_frame, &max_frame) ||
        !json_int(json_get(w, "window_offset"), 0, INT64_MAX, &offset) ||
        !json_int(json_get(w, "window_size"), c->monitor ? 0 : 1, INT64_MAX, &size) ||
        (json_get(w, "channel_session") &&
         !json_int(json_get(w, "channel_session"), 0, UINT32_MAX, &channel_session))) {
        snprintf(err, errlen, "the host's WELCOME has a missing or bad max_frame, window or channel_session");
        return -1;
    }
    if ((uint64_t)offset > c->region_size || (uint64_t)size > c->region_size - (uint64_t)offset) {
        snprintf(err, errlen, "the host's window [%lld, +%lld) is outside the %zu-byte region",
                 (long long)offset, (long long)size, c->region_size);
        return -1;
    }
    c->max_frame = (uint32_t)max_frame;
    c->window = c->region + offset;
    c->window_size = (uint64_t)size;
    c->ring_size = c->window_size >= KVMGPU_MAILBOX_MIN_WINDOW ? c->window_size - KVMGPU_MAILBOX_BYTES : c->window_size;
    c->ring_end = c->ring_size;
    c->npins = 0;
    if (channel_session)
        c->session = (uint32_t)channel_session; /* a guest agent numbers sessions on the channel */
    if (c->ring_size)
        madvise(c->window, c->ring_size, 23 /* MADV_POPULATE_WRITE, Linux 5.14: best effort */);

    const struct json *d = json_get(w, "device"), *x;
    struct kvmgpu_device *dev = &c->device;
    if (!d || d->type != JSON_OBJECT) {
        snprintf(err, errlen, "the host's WELCOME has no device");
        return -1;
    }
    x = json_get(d, "name");
    snprintf(dev->name, sizeof dev->name, "%s", x && x->type == JSON_STRING ? x->string : "kvmgpu vGPU");
    x = json_get(d, "uuid");
    parse_uuid(x && x->type == JSON_STRING ? x->string : "", dev->uuid);
    snprintf(dev->uuid_text, sizeof dev->uuid_text, "%s", x && x->type == JSON_STRING ? x->string : "");
    if (json_int(json_get(d, "total_memory"), 0, INT64_MAX, &v))
        dev->total_memory = (uint64_t)v;
    if (json_int(json_get(d, "driver_version"), 0, INT32_MAX, &v))
        dev->driver_version = (int)v;
    x = json_get(d, "compute_capability");
    if (x && x->type == JSON_ARRAY && x->child && x->child->next) {
        if (json_int(x->child, 0, 1000, &v))
            dev->cc_major = (int)v;
        if (json_int(x->child->next, 0, 1000, &v))
            dev->cc_minor = (int)v;
    }
    x = json_get(d, "attributes");
    for (const struct json *a = x && x->type == JSON_OBJECT ? x->child : NULL; a; a = a->next) {
        char *end;
        long id = strtol(a->key, &end, 10);
        if (*end == '\0' && id > 0 && id < KVMGPU_CU_DEVICE_ATTRIBUTE_MAX && json_int(a, INT32_MIN, INT32_MAX, &v)) {
            dev->attribute[id] = (int)v;
            dev->has_attribute[id] = 1;
        }
    }
    return 0;
}

static int handshake(struct kvmgpu_client *c, const struct kvmgpu_client_kind *kind, char *err, size_t errlen)
{
    uint64_t window = kind->window;
    const char *env = getenv("KVMGPU_WINDOW");
    if (window == 0 && env && *env)
        window = strtoull(env, NULL, 0);
    else if (window == 0 && c->shared)
        window = c->region_size / SHARED_WINDOW_PART;
    char hello[512];
    int n = snprintf(hello, sizeof hello,
                     "{\"version_min\":%d,\"version_max\":%d,\"max_frame\":%d,\"window\":%llu,"
                     "\"client\":\"kvmgpu %s/" LIB_VERSION " pid %d\",\"pid\":%d,\"role\":\"%s\"}",
                     KVMGPU_PROTOCOL_VERSION, KVMGPU_PROTOCOL_VERSION, KVMGPU_DEFAULT_MAX_FRAME,
                     (unsigned long long)window, kind->library, (int)getpid(), (int)getpid(), kind->role);
    if (send_frame(c, KVMGPU_HELLO, hello, (uint32_t)n)) {
        snprintf(err, errlen, "cannot say HELLO to the host: the channel closed");
        return -1;
    }
    for (;;) {
        struct kvmgpu_frame_header h;
        if (next_frame(c, &h, KVMGPU_HANDSHAKE_MAX)) {
            snprintf(err, errlen, "the host closed the channel during the handshake");
            return -1;
        }
        if (h.kind == KVMGPU_GOODBYE) {
            snprintf(err, errlen, "the host refused the session: %.*s", (int)h.length, (char *)c->frame);
            return -1;
        }
        if (h.kind != KVMGPU_WELCOME || h.session != c->session)
            continue;
        char jerr[128];
        struct json *w = json_parse((const char *)c->frame, h.length, jerr, sizeof jerr);
        if (!w || w->type != JSON_OBJECT) {
            snprintf(err, errlen, "the host's WELCOME is not a JSON object (%s)", w ? "another value" : jerr);
            json_free(w);
            return -1;
        }
        int rc = read_welcome(c, w, KVMGPU_DEFAULT_MAX_FRAME, err, errlen);
        json_free(w);
        return rc;
    }
}

/* The batch, and the mailbox where the window has one, this is x86-64 and KVMGPU_MAILBOX is not 0
 * (the host reset it when it made the window). */
static int start_calls(struct kvmgpu_client *c, char *err, size_t errlen)
{
    c->batch_cap = c->batch_bytes + c->max_frame + 2 * sizeof(struct kvmgpu_frame_header);
    c->batch = malloc(c->batch_cap);
    if (!c->batch) {
        snprintf(err, errlen, "out of memory for the batch of queued calls");
        return -1;
    }
    c->batch_limit = c->first_batch;
    c->clean = 1;
#if defined(__x86_64__)
    int wanted = c->want_box;
#else
    int wanted = 0; /* the mailbox counts on x86's ordering of loads and stores */
#endif
    if (wanted && c->window_size >= KVMGPU_MAILBOX_MIN_WINDOW) {
        c->box = (volatile uint32_t *)(c->window + c->window_size - KVMGPU_MAILBOX_BYTES);
        c->box[BOX_ASLEEP] = 0;
    }
    return 0;
}

static const struct kvmgpu_client_kind libcuda_kind = {"libcuda", "", 0};

int kvmgpu_client_open(struct kvmgpu_client *c, const struct kvmgpu_client_kind *kind, char *err, size_t errlen)
{
    if (!kind)
        kind = &libcuda_kind;
    pthread_mutexattr_t attr;
    memset(c, 0, sizeof *c);
    c->fd = -1;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&c->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    c->session = (uint32_t)getpid();
    c->monitor = !strcmp(kind->role, "monitor"); /* the host gives it no window: it copies nothing */
    if (*kind->role)
        c->session |= 0x80000000u; /* beside the process's CUDA session on one channel (pids are < 2^22) */
    c->frame = malloc(KVMGPU_DEFAULT_MAX_FRAME + sizeof(struct kvmgpu_frame_header));
    if (!c->frame) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (read_settings(c, err, errlen) == 0 && find_channel(c, err, errlen) == 0 &&
        handshake(c, kind, err, errlen) == 0 && start_calls(c, err, errlen) == 0)
        return 0;
    c->dead = 1;
    kvmgpu_client_close(c, NULL);
    return -1;
}

void kvmgpu_client_close(struct kvmgpu_client *c, const char *reason)
{
    kvmgpu_client_lock(c);
    if (c->fd >= 0 && !c->dead && c->batch_len)
        send_all(c, c->batch, c->batch_len); /* queued calls go before the GOODBYE */
    c->batch_len = 0;
    if (c->fd >= 0 && !c->dead && reason)
        send_frame(c, KVMGPU_GOODBYE, reason, (uint32_t)strlen(reason));
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->dead = 1;
    if (c->region && c->npins == 0) /* (page-locked memory in it stays readable to the process's end) */
        munmap(c->region, c->region_size);
    c->npins = 0;
    c->region = c->window = NULL;
    free(c->frame);
    free(c->batch);
    c->frame = c->batch = NULL;
    c->box = NULL;
    kvmgpu_client_unlock(c);
}

/* --- calls ------------------------------------------------------------------------------------- */

static inline void fence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* (mfence: x86 may move a load before an earlier store) */
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int send_batch(struct kvmgpu_client *c)
{
    int rc = send_all(c, c->batch, c->batch_len);
    c->batch_len = 0;
    c->clean = 0;
    return rc;
}

/* The batch, which ends with a call whose answer is read next: posted to the mailbox where it fits,
 * nothing went on the channel since the last reply (the host takes a post when it sees it, not
 * after the channel's unread bytes) and the worker says it looks there; else written to the
 * channel. 1: posted, 0: sent, -1: the channel is gone. */
static int deliver(struct kvmgpu_client *c)
{
    volatile uint32_t *box = c->box;
    if (box && c->clean && c->batch_len <= BOX_REQUEST_MAX && box[BOX_AWAKE] == 1) {
        memcpy((uint8_t *)box + BOX_HEAD, c->batch, c->batch_len);
        box[BOX_SIZE] = (uint32_t)c->batch_len;
        c->batch_len = 0;
        __atomic_store_n(&box[BOX_POST], ++c->box_number, __ATOMIC_RELEASE);
        fence();
        if (box[BOX_AWAKE] != 1 && send_frame(c, KVMGPU_DOORBELL, NULL, 0)) /* it blocked meanwhile: ring */
            return -1;
        return 1;
    }
    return send_batch(c) ? -1 : 0;
}

/* Wait for the worker's answer to the last post: spin for poll_us, then say this side sleeps and
 * block on the channel until the DOORBELL (or a reply sent there). Its reply into `r` and
 * c->frame: 1 where the mailbox held it, 0 where it went on the channel (read it there), -1. */
static int answer(struct kvmgpu_client *c, struct kvmgpu_frame_header *r)
{
    volatile uint32_t *box = c->box;
    double until = now_us() + c->poll_us;
    while (__atomic_load_n(&box[BOX_ANSWER], __ATOMIC_ACQUIRE) != c->box_number) {
        if (now_us() < until) {
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
            continue;
        }
        box[BOX_ASLEEP] = 1;
        fence();
        while (__atomic_load_n(&box[BOX_ANSWER], __ATOMIC_ACQUIRE) != c->box_number) {
            if (next_frame(c, r, c->max_frame))
                return -1;
            if (r->kind == KVMGPU_DOORBELL)
                continue;
            box[BOX_ASLEEP] = 0;
            return 0; /* a reply (or GOODBYE) on the channel: the caller reads it as any */
        }
        break;
    }
    box[BOX_ASLEEP] = 0;
    uint32_t n = box[BOX_LENGTH];
    if (n == 0) { /* the answer went on the channel */
        do {
            if (next_frame(c, r, c->max_frame))
                return -1;
        } while (r->kind == KVMGPU_DOORBELL);
        return 0;
    }
    if (n < sizeof *r || n > BOX_REPLY_MAX) {
        lose(c, "the host's mailbox answer has a bad length");
        return -1;
    }
    const uint8_t *reply = (const uint8_t *)box + BOX_HEAD + BOX_REQUEST_MAX;
    memcpy(r, reply, sizeof *r);
    if (r->magic != KVMGPU_MAGIC || r->length != n - sizeof *r) {
        lose(c, "the host's mailbox answer is not one frame");
        return -1;
    }
    memcpy(c->frame, reply + sizeof *r, r->length);
    return 1;
}

/* The call's frame at the batch's end (batch_len < batch_limit <= batch_bytes: a frame always
 * fits); its seq. The caller holds the lock and checked `length <= max_frame`. */
static uint32_t put_frame(struct kvmgpu_client *c, enum kvmgpu_op op, const uint64_t *args, unsigned nargs,
                          const void *blob, size_t blob_size, int queued)
{
    struct kvmgpu_call_head head = {(uint16_t)op, (uint16_t)nargs};
    size_t length = sizeof head + 8 * (size_t)nargs + blob_size;
    struct kvmgpu_frame_header h = {KVMGPU_MAGIC, KVMGPU_CALL, queued ? KVMGPU_QUEUED : 0, c->session,
                                    ++c->seq, (uint32_t)length};
    uint8_t *p = c->batch + c->batch_len;
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, &head, sizeof head);
    if (nargs)
        memcpy(p + sizeof h + sizeof head, args, 8 * (size_t)nargs);
    if (blob_size)
        memcpy(p + sizeof h + sizeof head + 8 * (size_t)nargs, blob, blob_size);
    c->batch_len += sizeof h + length;
    return h.seq;
}

/* The reply to call `seq` (posted: read from the mailbox first), its results copied out; a CUresult. */
static int take_reply(struct kvmgpu_client *c, uint32_t seq, int posted, void *results, size_t results_size,
                      void *reply_blob, size_t *reply_blob_size)
{
    for (;;) {
        struct kvmgpu_frame_header r;
        if (posted) {
            posted = 0;
            if (answer(c, &r) < 0)
                return KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
        } else if (next_frame(c, &r, c->max_frame)) {
            return KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
        }
        if (r.kind == KVMGPU_DOORBELL)
            continue; /* (late: the answer was read first) */
        if (r.kind == KVMGPU_GOODBYE) {
            char why[KVMGPU_MAX_ERROR_TEXT + 64];
            snprintf(why, sizeof why, "the host ended the session: %.*s",
                     (int)(r.length < KVMGPU_MAX_ERROR_TEXT ? r.length : KVMGPU_MAX_ERROR_TEXT), (char *)c->frame);
            lose(c, why);
            return KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
        }
        if (r.kind != KVMGPU_REPLY || r.seq != seq || r.length < 4) {
            lose(c, "the host sent a frame that answers no call");
            return KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
        }
        /* everything sent before the call is done: the mailbox may be used, and batches start small */
        c->clean = 1;
        c->batch_limit = c->first_batch;
        int32_t st;
        memcpy(&st, c->frame, 4);
        if (st != 0) {
            size_t n = r.length - 4 < KVMGPU_MAX_ERROR_TEXT ? r.length - 4 : KVMGPU_MAX_ERROR_TEXT;
            memcpy(c->last_error, c->frame + 4, n);
            c->last_error[n] = '\0';
            return st;
        }
        if (r.length - 4 < results_size) {
            lose(c, "a reply shorter than its results");
            return KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
        }
        if (results_size)
            memcpy(results, c->frame + 4, results_size);
        if (reply_blob_size) {
            size_t n = r.length - 4 - results_size;
            memcpy(reply_blob, c->frame + 4 + results_size, n < *reply_blob_size ? n : *reply_blob_size);
            *reply_blob_size = n;
        }
        return KVMGPU_CUDA_SUCCESS;
    }
}

int kvmgpu_call(struct kvmgpu_client *c, enum kvmgpu_op op, const uint64_t *args, unsigned nargs,
                const void *blob, size_t blob_size, int queued, void *results, size_t results_size,
                void *reply_blob, size_t *reply_blob_size)
{
    size_t length = sizeof(struct kvmgpu_call_head) + 8 * (size_t)nargs + blob_size;
    int status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
    kvmgpu_client_lock(c);
    if (c->dead)
        goto out;
    status = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (length > c->max_frame)
        goto out;
    uint32_t seq = put_frame(c, op, args, nargs, blob, blob_size, queued);
    status = KVMGPU_CUDA_SUCCESS;
    if (queued) {
        if (c->batch_len >= c->batch_limit) {
            if (send_batch(c))
                status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
            c->batch_limit = c->batch_limit * 2 < c->batch_bytes ? c->batch_limit * 2 : c->batch_bytes;
        }
        goto out;
    }
    status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
    int posted = deliver(c);
    if (posted >= 0)
        status = take_reply(c, seq, posted, results, results_size, reply_blob, reply_blob_size);
    if (status && kvmgpu_tracing())
        kvmgpu_log("op %d: error %d: %s", (int)op, status, c->last_error);
out:
    kvmgpu_client_unlock(c);
    if (kvmgpu_tracing()) {
        uint64_t r[2] = {0, 0};
        if (!queued && status == 0 && results)
            memcpy(r, results, results_size < sizeof r ? results_size : sizeof r);
        kvmgpu_log("op %d(%llx %llx %llx %llx%s)%s -> %d [%llx %llx]", (int)op,
                   (unsigned long long)(nargs > 0 ? args[0] : 0), (unsigned long long)(nargs > 1 ? args[1] : 0),
                   (unsigned long long)(nargs > 2 ? args[2] : 0), (unsigned long long)(nargs > 3 ? args[3] : 0),
                   nargs > 4 ? " ..." : "", queued ? " queued" : "", status, (unsigned long long)r[0],
                   (unsigned long long)r[1]);
    }
    return status;
}

/* --- bulk bytes -------------------------------------------------------------------------------- */

/* --- page-locked memory in the window ------------------------------------------------------------ */

void *kvmgpu_client_pin(struct kvmgpu_client *c, size_t n)
{
    void *p = NULL;
    kvmgpu_client_lock(c);
    n = (n + 4095) & ~(size_t)4095;
    uint64_t floor = c->ring_end / 2; /* the ring keeps at least half for bulk copies */
    if (c->dead || !n || n > c->ring_end || c->npins == KVMGPU_MAX_PINNED)
        goto out;
    /* highest first: the first gap from the top that holds n, else below the lowest block */
    uint64_t top = c->ring_end & ~(uint64_t)4095;
    int at = c->npins;
    for (int i = 0; i < c->npins; i++) {
        if (top - (c->pins[i].offset + c->pins[i].size) >= n) {
            at = i;
            break;
        }
        top = c->pins[i].offset;
    }
    if (top < n || (at == c->npins && top - n < floor)) {
        if (kvmgpu_tracing())
            kvmgpu_log("page-locked %zu bytes: plain guest memory (the window keeps half of its %llu-byte ring)", n,
                       (unsigned long long)c->ring_end);
        goto out;
    }
    memmove(&c->pins[at + 1], &c->pins[at], (size_t)(c->npins - at) * sizeof c->pins[0]);
    c->pins[at] = (struct kvmgpu_pinned){top - n, n};
    c->npins++;
    c->ring_size = c->pins[c->npins - 1].offset;
    p = c->window + (top - n);
    if (kvmgpu_tracing())
        kvmgpu_log("page-locked %zu bytes in the window at offset %llu", n, (unsigned long long)(top - n));
out:
    kvmgpu_client_unlock(c);
    return p;
}

int kvmgpu_client_unpin(struct kvmgpu_client *c, void *p)
{
    int rc = -1;
    kvmgpu_client_lock(c);
    for (int i = 0; i < c->npins && c->window; i++) {
        if (c->window + c->pins[i].offset == (uint8_t *)p) {
            memmove(&c->pins[i], &c->pins[i + 1], (size_t)(c->npins - i - 1) * sizeof c->pins[0]);
            c->npins--;
            c->ring_size = c->npins ? c->pins[c->npins - 1].offset : c->ring_end;
            rc = 0;
            break;
        }
    }
    kvmgpu_client_unlock(c);
    return rc;
}

/* Whether [p, p + n) lies in one page-locked block of the window: its offset in `offset`. */
static int in_pinned(const struct kvmgpu_client *c, const void *p, size_t n, uint64_t *offset)
{
    const uint8_t *b = p;
    for (int i = 0; i < c->npins; i++) {
        const uint8_t *start = c->window + c->pins[i].offset;
        if (b >= start && n <= c->pins[i].size && (size_t)(b - start) <= c->pins[i].size - n) {
            *offset = c->pins[i].offset + (uint64_t)(b - start);
            return 1;
        }
    }
    return 0;
}

/* A bulk copy's chunk: a quarter of it (rounded to 64 KiB) from pipe_min to pipe_chunk, at most
 * the ring (as kvmgpu_guest/client.py's _chunk). */
static size_t chunk_of(const struct kvmgpu_client *c, size_t n)
{
    size_t quarter = (n / 4 + 0xFFFF) & ~(size_t)0xFFFF;
    size_t chunk = quarter < c->pipe_chunk ? quarter : c->pipe_chunk;
    if (chunk < c->pipe_min)
        chunk = c->pipe_min;
    if (chunk > n)
        chunk = n;
    if (chunk > c->ring_size)
        chunk = c->ring_size;
    return chunk ? chunk : 1;
}

static void copy_bytes(const struct kvmgpu_client *c, void *dst, const void *src, size_t n)
{
    if (c->copier && n >= 2 * c->copy_split)
        kvmgpu_split_copy(dst, src, n, c->copy_split);
    else
        memcpy(dst, src, n);
}

/* Pipelined: each chunk's copy is sent (queued) as soon as its bytes are in the window, so the
 * host copies chunk k while this side fills chunk k+1; the last chunk's call waits (it
 * synchronises the stream, so every chunk has landed). Where the ring would wrap, a FENCE first
 * (no queued copy still reads the window). */
int kvmgpu_client_htod(struct kvmgpu_client *c, uint64_t dst, const void *src, size_t n, uint64_t stream)
{
    int status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
    kvmgpu_client_lock(c);
    if (c->dead)
        goto out;
    uint64_t at;
    if (n == 0 || in_pinned(c, src, n, &at)) { /* (an empty copy: the host checks it) */
        status = kvmgpu_memcpy_htod(c, dst, n ? at : 0, n, stream, 0); /* from page-locked memory: no copy here */
        goto out;
    }
    size_t chunk = chunk_of(c, n), head = 0;
    status = 0;
    for (size_t pos = 0; status == 0 && pos < n;) {
        size_t size = n - pos < chunk ? n - pos : chunk;
        int last = pos + size >= n;
        if (head + size > c->ring_size) {
            status = kvmgpu_fence(c);
            head = 0;
            if (status)
                break;
        }
        copy_bytes(c, c->window + head, (const uint8_t *)src + pos, size);
        status = kvmgpu_memcpy_htod(c, dst + pos, head, size, stream, !last);
        if (status == 0 && !last && c->batch_len && send_batch(c)) /* the host starts on it now */
            status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
        head += (size + 4095) & ~(size_t)4095;
        pos += size;
    }
out:
    kvmgpu_client_unlock(c);
    return status;
}

/* Pipelined: two chunks asked for ahead, in two halves of the ring, through the channel; each
 * reply says a chunk is in the window, and this side copies it out while the host brings the next. */
int kvmgpu_client_dtoh(struct kvmgpu_client *c, void *dst, uint64_t src, size_t n, uint64_t stream)
{
    int status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
    kvmgpu_client_lock(c);
    if (c->dead)
        goto out;
    uint64_t at;
    if (n && in_pinned(c, dst, n, &at)) { /* into page-locked memory: the host writes it there */
        status = kvmgpu_memcpy_dtoh(c, at, src, n, stream);
        goto out;
    }
    size_t chunk = chunk_of(c, n ? n : 1);
    if (n == 0 || n <= chunk || 2 * chunk > c->ring_size) { /* one piece at a time */
        status = n ? 0 : kvmgpu_memcpy_dtoh(c, 0, src, 0, stream);
        for (size_t pos = 0; status == 0 && pos < n;) {
            size_t size = n - pos < c->ring_size ? n - pos : c->ring_size;
            status = kvmgpu_memcpy_dtoh(c, 0, src + pos, size, stream);
            if (status == 0)
                copy_bytes(c, (uint8_t *)dst + pos, c->window, size);
            pos += size;
        }
        goto out;
    }
    size_t count = (n + chunk - 1) / chunk, half = (c->ring_size / 2) & ~(size_t)4095, asked = 0;
    uint32_t seqs[2];
    status = 0;
    for (; asked < count && asked < 2; asked++) {
        size_t size = n - asked * chunk < chunk ? n - asked * chunk : chunk;
        const uint64_t args[4] = {asked * half, src + asked * chunk, size, stream};
        seqs[asked] = put_frame(c, KVMGPU_OP_MEMCPY_DTOH, args, 4, NULL, 0, 0);
    }
    if (send_batch(c)) {
        status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
        goto out;
    }
    for (size_t k = 0; k < asked; k++) { /* every reply asked for is read, whatever happened */
        int st = take_reply(c, seqs[k % 2], 0, NULL, 0, NULL, NULL);
        if (c->dead) {
            status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
            goto out;
        }
        if (st && !status)
            status = st;
        if (status)
            continue; /* (the one still asked for is read, nothing more asked) */
        size_t size = n - k * chunk < chunk ? n - k * chunk : chunk;
        copy_bytes(c, (uint8_t *)dst + k * chunk, c->window + (k % 2) * half, size);
        if (asked < count) { /* its half is free again: the chunk after next goes there */
            size_t next = n - asked * chunk < chunk ? n - asked * chunk : chunk;
            const uint64_t args[4] = {(asked % 2) * half, src + asked * chunk, next, stream};
            seqs[asked % 2] = put_frame(c, KVMGPU_OP_MEMCPY_DTOH, args, 4, NULL, 0, 0);
            asked++;
            if (send_batch(c)) {
                status = KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE;
                goto out;
            }
        }
    }
out:
    kvmgpu_client_unlock(c);
    return status;
}

int kvmgpu_client_module_load(struct kvmgpu_client *c, const void *image, size_t n, uint64_t *module)
{
    uint8_t digest[32];
    struct kvmgpu_results_module_load out;
    kvmgpu_sha256(image, n, digest);
    kvmgpu_client_lock(c);
    int status = kvmgpu_module_load(c, 0, 0, digest, sizeof digest, &out); /* does the host have it? */
    if (kvmgpu_tracing())
        kvmgpu_log("module image of %zu bytes (sha256 %02x%02x%02x%02x...): %s", n, digest[0], digest[1], digest[2],
                   digest[3], status == KVMGPU_CUDA_ERROR_NOT_FOUND ? "sent to the host" : "the host has it");
    if (status == KVMGPU_CUDA_ERROR_NOT_FOUND) {
        if (n > c->ring_size) {
            status = KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            memcpy(c->window, image, n);
            status = kvmgpu_module_load(c, 0, n, digest, sizeof digest, &out);
        }
    }
    kvmgpu_client_unlock(c);
    if (status == 0)
        *module = out.module;
    return status;
}
