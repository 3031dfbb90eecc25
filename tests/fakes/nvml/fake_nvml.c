/*
 * A fake NVIDIA driver library for tests: built as libnvidia-ml.so.1 and found by the real
 * nvidia-ml-py through LD_LIBRARY_PATH, exactly as it finds the real one on a box.
 *
 * Its world is the scenario file named by FAKE_NVML_SCENARIO, read at nvmlInitWithFlags.
 * Without that variable every init fails, so a copy that strays onto a real machine never
 * invents GPUs. The format (see tests/fakes/nvml.py, which writes it):
 *
 *   # comment
 *   driver 580.95.05                    nvmlSystemGetDriverVersion
 *   cuda 13000                          nvmlSystemGetCudaDriverVersion(_v2)
 *   nvml 13.580.95.05                   nvmlSystemGetNVMLVersion (default: <cuda major>.<driver>)
 *   init_error 9                        nvmlInitWithFlags returns this code
 *   error nvmlDeviceGetMemoryInfo_v2 13 that function returns this code, for every device
 *   gpu name="NVIDIA H100 80GB HBM3" uuid=GPU-... bus=00000000:01:00.0 pci_id=0x233010de
 *       mem_total=85520809984 mem_used=0 mem_reserved=0 temp=35 cc=9.0 ecc_unc=0 ecc_cor=0 lost=0
 *
 * One `gpu` line per device, in index order. `na` as a value of mem_total, temp, cc, ecc_unc
 * or ecc_cor makes that query return NOT_SUPPORTED. lost=1: the handle and the UUID are still
 * given, every other query returns GPU_IS_LOST; lost=handle: nvmlDeviceGetHandleByIndex_v2
 * itself returns GPU_IS_LOST. An unknown word makes init fail with UNKNOWN and a message on
 * stderr, so a typo in a test never passes silently.
 *
 * util=<percent> and power_mw=<milliwatts> (default na) answer nvmlDeviceGetUtilizationRates
 * and nvmlDeviceGetPowerUsage. XID events: FAKE_NVML_XIDS names a file of "<gpu index> <xid>"
 * lines; nvmlEventSetWait_v2 delivers each line once, in order, to a set that registered
 * nvmlEventTypeXidCriticalError for that GPU (a test appends lines while the agent runs).
 * An `error nvmlEventSetCreate 13` line makes a driver without event sets.
 *
 * FAKE_NVML_CALLS, when set, names a file to which every call appends its function name.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SUCCESS 0
#define ERROR_UNINITIALIZED 1
#define ERROR_INVALID_ARGUMENT 2
#define ERROR_NOT_SUPPORTED 3
#define ERROR_INSUFFICIENT_SIZE 7
#define ERROR_TIMEOUT 10
#define ERROR_GPU_IS_LOST 15
#define ERROR_ARGUMENT_VERSION_MISMATCH 25
#define ERROR_UNKNOWN 999

#define MAX_GPUS 16
#define MAX_ERRORS 32
#define NA (-1LL)

typedef struct fake_gpu {
    char name[96];
    char uuid[96];
    char bus[32];
    unsigned int pci_id;
    long long mem_total, mem_used, mem_reserved, temp, ecc_unc, ecc_cor, util, power_mw;
    int cc_major, cc_minor; /* cc_major < 0: not supported */
    int lost;               /* 0, 1 (after the handle), 2 (the handle itself) */
} fake_gpu;

/* What nvidia-ml-py passes in; layouts as its ctypes structures, checked below. */
typedef struct fake_gpu *nvmlDevice_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct {
    unsigned int version, sensorType;
    int temperature;
} nvmlTemperature_t;

_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t is 40 bytes");
_Static_assert(offsetof(nvmlMemory_v2_t, total) == 8, "total at offset 8");
_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t is 68 bytes");
_Static_assert(sizeof(nvmlTemperature_t) == 12, "nvmlTemperature_t is 12 bytes");

#define MEMORY_V2 0x02000028u
#define TEMPERATURE_V1 0x0100000Cu

static fake_gpu gpus[MAX_GPUS];
static unsigned int gpu_count;
static char driver[80] = "580.95.05";
static char nvml_version[80];
static int cuda = 13000;
static int init_error;
static struct {
    char fn[64];
    int code;
} errors[MAX_ERRORS];
static int error_count;
static int initialized;

static void record(const char *fn) {
    const char *path = getenv("FAKE_NVML_CALLS");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0)
        return;
    char line[96];
    int n = snprintf(line, sizeof line, "%s\n", fn);
    if (write(fd, line, (size_t)n) < 0) { /* a test reading the log will notice */
    }
    close(fd);
}

/* Every entry point: log the call, then an `error` line for it wins over everything. */
static int enter(const char *fn) {
    record(fn);
    for (int i = 0; i < error_count; i++)
        if (strcmp(errors[i].fn, fn) == 0)
            return errors[i].code;
    return SUCCESS;
}

#define ENTER(needs_init)                  \
    do {                                   \
        int forced_ = enter(__func__);     \
        if (forced_)                       \
            return forced_;                \
        if ((needs_init) && !initialized)  \
            return ERROR_UNINITIALIZED;    \
    } while (0)

static int valid(nvmlDevice_t d) { return d >= gpus && d < gpus + gpu_count; }

#define DEVICE(d)                          \
    do {                                   \
        if (!valid(d))                     \
            return ERROR_INVALID_ARGUMENT; \
        if ((d)->lost)                     \
            return ERROR_GPU_IS_LOST;      \
    } while (0)

static int copy_out(char *out, unsigned int length, const char *value) {
    if (!out)
        return ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length)
        return ERROR_INSUFFICIENT_SIZE;
    strcpy(out, value);
    return SUCCESS;
}

static int bad(const char *what, const char *text, int line) {
    fprintf(stderr, "fake_nvml: scenario line %d: %s: %s\n", line, what, text);
    return ERROR_UNKNOWN;
}

static int number(const char *text, long long *out) {
    char *end;
    if (strcmp(text, "na") == 0) {
        *out = NA;
        return 1;
    }
    *out = strtoll(text, &end, 0);
    return end != text && *end == '\0' && *out >= 0;
}

/* Next `key=value` of a gpu line; value may be "double quoted". Returns 0 at the end. */
static int next_pair(char **cursor, char **key, char **value) {
    char *p = *cursor;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return 0;
    *key = p;
    while (*p && *p != '=' && *p != ' ')
        p++;
    if (*p != '=')
        return -1;
    *p++ = '\0';
    if (*p == '"') {
        *value = ++p;
        while (*p && *p != '"')
            p++;
        if (*p != '"')
            return -1;
    } else {
        *value = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    if (*p)
        *p++ = '\0';
    *cursor = p;
    return 1;
}

static int parse_gpu(char *rest, int line) {
    if (gpu_count >= MAX_GPUS)
        return bad("too many gpus", rest, line);
    fake_gpu *g = &gpus[gpu_count];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "NVIDIA Fake GPU");
    snprintf(g->uuid, sizeof g->uuid, "GPU-00000000-0000-0000-0000-%012u", gpu_count);
    snprintf(g->bus, sizeof g->bus, "00000000:%02X:00.0", gpu_count + 1);
    g->pci_id = 0x233010de;
    g->mem_total = 80LL << 30;
    g->temp = 35;
    g->cc_major = 9;
    g->util = NA;
    g->power_mw = NA;
    char *key, *value;
    int more;
    while ((more = next_pair(&rest, &key, &value)) == 1) {
        long long n = 0;
        if (strcmp(key, "name") == 0)
            snprintf(g->name, sizeof g->name, "%s", value);
        else if (strcmp(key, "uuid") == 0)
            snprintf(g->uuid, sizeof g->uuid, "%s", value);
        else if (strcmp(key, "bus") == 0)
            snprintf(g->bus, sizeof g->bus, "%s", value);
        else if (strcmp(key, "lost") == 0)
            g->lost = strcmp(value, "handle") == 0 ? 2 : atoi(value) ? 1 : 0;
        else if (strcmp(key, "cc") == 0) {
            if (strcmp(value, "na") == 0)
                g->cc_major = -1;
            else if (sscanf(value, "%d.%d", &g->cc_major, &g->cc_minor) != 2)
                return bad("cc is major.minor or na", value, line);
        } else {
            long long *slot = strcmp(key, "mem_total") == 0      ? &g->mem_total
                              : strcmp(key, "mem_used") == 0     ? &g->mem_used
                              : strcmp(key, "mem_reserved") == 0 ? &g->mem_reserved
                              : strcmp(key, "temp") == 0         ? &g->temp
                              : strcmp(key, "ecc_unc") == 0      ? &g->ecc_unc
                              : strcmp(key, "ecc_cor") == 0      ? &g->ecc_cor
                              : strcmp(key, "util") == 0         ? &g->util
                              : strcmp(key, "power_mw") == 0     ? &g->power_mw
                              : strcmp(key, "pci_id") == 0       ? &n
                                                                 : NULL;
            if (!slot)
                return bad("unknown gpu field", key, line);
            if (!number(value, slot))
                return bad(key, value, line);
            if (slot == &n)
                g->pci_id = (unsigned int)n;
        }
    }
    if (more < 0)
        return bad("expected key=value", rest, line);
    gpu_count++;
    return SUCCESS;
}

static int load_scenario(void) {
    const char *path = getenv("FAKE_NVML_SCENARIO");
    if (!path || !*path) {
        fprintf(stderr, "fake_nvml: FAKE_NVML_SCENARIO is not set; this is a test library\n");
        return ERROR_UNKNOWN;
    }
    FILE *f = fopen(path, "r");
    if (!f)
        return bad("cannot open scenario", path, 0);
    gpu_count = 0;
    error_count = 0;
    init_error = 0;
    nvml_version[0] = '\0';
    char buf[1024];
    int line = 0, rc = SUCCESS;
    while (rc == SUCCESS && fgets(buf, sizeof buf, f)) {
        line++;
        buf[strcspn(buf, "\r\n")] = '\0';
        char *p = buf;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p || *p == '#')
            continue;
        char word[32] = "", rest[1000] = "";
        sscanf(p, "%31s %999[^\n]", word, rest);
        if (strcmp(word, "gpu") == 0)
            rc = parse_gpu(rest, line);
        else if (strcmp(word, "driver") == 0)
            snprintf(driver, sizeof driver, "%s", rest);
        else if (strcmp(word, "nvml") == 0)
            snprintf(nvml_version, sizeof nvml_version, "%s", rest);
        else if (strcmp(word, "cuda") == 0)
            cuda = atoi(rest);
        else if (strcmp(word, "init_error") == 0)
            init_error = atoi(rest);
        else if (strcmp(word, "error") == 0) {
            if (error_count >= MAX_ERRORS ||
                sscanf(rest, "%63s %d", errors[error_count].fn, &errors[error_count].code) != 2)
                rc = bad("error takes FUNCTION CODE", rest, line);
            else
                error_count++;
        } else
            rc = bad("unknown word", word, line);
    }
    fclose(f);
    if (!nvml_version[0])
        snprintf(nvml_version, sizeof nvml_version, "%d.%.64s", cuda / 1000, driver);
    return rc;
}

int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    record(__func__);
    int rc = load_scenario(); /* the scenario's `error` lines are known only after this */
    if (rc)
        return rc;
    if (init_error)
        return init_error;
    for (int i = 0; i < error_count; i++)
        if (strcmp(errors[i].fn, __func__) == 0)
            return errors[i].code;
    initialized++;
    return SUCCESS;
}

int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

int nvmlShutdown(void) {
    ENTER(1);
    initialized--;
    return SUCCESS;
}

const char *nvmlErrorString(int result) {
    record(__func__);
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 13: return "Function Not Found";
    case 15: return "GPU is lost";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    case 25: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER(1);
    return copy_out(version, length, driver);
}

int nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    ENTER(1);
    return copy_out(version, length, nvml_version);
}

int nvmlSystemGetCudaDriverVersion(int *version) {
    ENTER(0); /* the real one answers before init too */
    if (!version)
        return ERROR_INVALID_ARGUMENT;
    *version = cuda;
    return SUCCESS;
}

int nvmlSystemGetCudaDriverVersion_v2(int *version) {
    ENTER(0);
    if (!version)
        return ERROR_INVALID_ARGUMENT;
    *version = cuda;
    return SUCCESS;
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER(1);
    if (!count)
        return ERROR_INVALID_ARGUMENT;
    *count = gpu_count;
    return SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER(1);
    if (!device || index >= gpu_count)
        return ERROR_INVALID_ARGUMENT;
    if (gpus[index].lost == 2)
        return ERROR_GPU_IS_LOST;
    *device = &gpus[index];
    return SUCCESS;
}

int nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    ENTER(1);
    if (!valid(d))
        return ERROR_INVALID_ARGUMENT;
    return copy_out(uuid, length, d->uuid); /* still known after the GPU is lost */
}

int nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    ENTER(1);
    DEVICE(d);
    return copy_out(name, length, d->name);
}

int nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    ENTER(1);
    DEVICE(d);
    if (!pci)
        return ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", d->bus);
    /* the legacy field is the short form, 0000:01:00.0 */
    const char *tail = strchr(d->bus, ':');
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000%s", tail ? tail : "");
    sscanf(d->bus, "%x:%x:%x", &pci->domain, &pci->bus, &pci->device);
    pci->pciDeviceId = d->pci_id;
    return SUCCESS;
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    ENTER(1);
    DEVICE(d);
    if (!memory)
        return ERROR_INVALID_ARGUMENT;
    if (d->mem_total == NA)
        return ERROR_NOT_SUPPORTED;
    /* v1 counts the driver's reservation as used */
    memory->total = (unsigned long long)d->mem_total;
    memory->used = (unsigned long long)(d->mem_used + d->mem_reserved);
    memory->free = memory->total - memory->used;
    return SUCCESS;
}

int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *memory) {
    ENTER(1);
    DEVICE(d);
    if (!memory)
        return ERROR_INVALID_ARGUMENT;
    if (memory->version != MEMORY_V2)
        return ERROR_ARGUMENT_VERSION_MISMATCH;
    if (d->mem_total == NA)
        return ERROR_NOT_SUPPORTED;
    memory->total = (unsigned long long)d->mem_total;
    memory->reserved = (unsigned long long)d->mem_reserved;
    memory->used = (unsigned long long)d->mem_used;
    memory->free = memory->total - memory->reserved - memory->used;
    return SUCCESS;
}

int nvmlDeviceGetTemperature(nvmlDevice_t d, unsigned int sensor, unsigned int *temp) {
    ENTER(1);
    DEVICE(d);
    if (!temp || sensor != 0)
        return ERROR_INVALID_ARGUMENT;
    if (d->temp == NA)
        return ERROR_NOT_SUPPORTED;
    *temp = (unsigned int)d->temp;
    return SUCCESS;
}

int nvmlDeviceGetTemperatureV(nvmlDevice_t d, nvmlTemperature_t *temp) {
    ENTER(1);
    DEVICE(d);
    if (!temp || temp->sensorType != 0)
        return ERROR_INVALID_ARGUMENT;
    if (temp->version != TEMPERATURE_V1)
        return ERROR_ARGUMENT_VERSION_MISMATCH;
    if (d->temp == NA)
        return ERROR_NOT_SUPPORTED;
    temp->temperature = (int)d->temp;
    return SUCCESS;
}

int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    ENTER(1);
    DEVICE(d);
    if (!major || !minor)
        return ERROR_INVALID_ARGUMENT;
    if (d->cc_major < 0)
        return ERROR_NOT_SUPPORTED;
    *major = d->cc_major;
    *minor = d->cc_minor;
    return SUCCESS;
}

/* errorType 0 corrected, 1 uncorrected; the fake's volatile and aggregate counts are equal. */
int nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, unsigned int type, unsigned int counter,
                                unsigned long long *count) {
    ENTER(1);
    DEVICE(d);
    if (!count || type > 1 || counter > 1)
        return ERROR_INVALID_ARGUMENT;
    long long value = type ? d->ecc_unc : d->ecc_cor;
    if (value == NA)
        return ERROR_NOT_SUPPORTED;
    *count = (unsigned long long)value;
    return SUCCESS;
}

typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;

int nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    ENTER(1);
    DEVICE(d);
    if (!u)
        return ERROR_INVALID_ARGUMENT;
    if (d->util == NA)
        return ERROR_NOT_SUPPORTED;
    u->gpu = (unsigned int)d->util;
    u->memory = (unsigned int)d->util;
    return SUCCESS;
}

int nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    ENTER(1);
    DEVICE(d);
    if (!mw)
        return ERROR_INVALID_ARGUMENT;
    if (d->power_mw == NA)
        return ERROR_NOT_SUPPORTED;
    *mw = (unsigned int)d->power_mw;
    return SUCCESS;
}

/* --- event sets: XIDs from the file FAKE_NVML_XIDS ------------------------------------- */

#define XID_CRITICAL 0x8ULL
typedef struct fake_set {
    unsigned long long types[MAX_GPUS];
    int used;
} fake_set;
typedef fake_set *nvmlEventSet_t;
typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;
static fake_set the_set;
static int xids_delivered;

int nvmlEventSetCreate(nvmlEventSet_t *set) {
    ENTER(1);
    if (!set)
        return ERROR_INVALID_ARGUMENT;
    memset(&the_set, 0, sizeof the_set);
    the_set.used = 1;
    *set = &the_set;
    return SUCCESS;
}

int nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) {
    ENTER(1);
    DEVICE(d);
    if (!types)
        return ERROR_INVALID_ARGUMENT;
    *types = XID_CRITICAL;
    return SUCCESS;
}

int nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    ENTER(1);
    DEVICE(d);
    if (set != &the_set || !the_set.used)
        return ERROR_INVALID_ARGUMENT;
    if (types & ~XID_CRITICAL)
        return ERROR_NOT_SUPPORTED;
    set->types[d - gpus] |= types;
    return SUCCESS;
}

/* The next undelivered line of the XID file, or 0 when there is none. */
static int next_xid(unsigned int *index, unsigned long long *xid) {
    const char *path = getenv("FAKE_NVML_XIDS");
    FILE *f = path && *path ? fopen(path, "r") : NULL;
    if (!f)
        return 0;
    char line[128];
    int n = 0, found = 0;
    while (fgets(line, sizeof line, f)) {
        if (n++ < xids_delivered)
            continue;
        if (sscanf(line, "%u %llu", index, xid) == 2) {
            found = 1;
            xids_delivered = n;
            break;
        }
        xids_delivered = n;
    }
    fclose(f);
    return found;
}

int nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    ENTER(1);
    if (set != &the_set || !the_set.used || !data)
        return ERROR_INVALID_ARGUMENT;
    unsigned int index;
    unsigned long long xid;
    while (next_xid(&index, &xid)) {
        if (index < gpu_count && (set->types[index] & XID_CRITICAL)) {
            memset(data, 0, sizeof *data);
            data->device = &gpus[index];
            data->eventType = XID_CRITICAL;
            data->eventData = xid;
            return SUCCESS;
        }
    }
    if (timeoutms)
        usleep(timeoutms > 100 ? 100000 : timeoutms * 1000);
    return ERROR_TIMEOUT;
}

int nvmlEventSetFree(nvmlEventSet_t set) {
    ENTER(1);
    if (set != &the_set)
        return ERROR_INVALID_ARGUMENT;
    the_set.used = 0;
    return SUCCESS;
}
