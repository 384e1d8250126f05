/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loading the daemon's configuration (gw/settings.h): parse each file with positions (gw_config),
 * validate it against its schema (gw_schema), then read the typed values. The schemas guarantee
 * shape and ranges, so the readers below only apply defaults; checks that a schema cannot express
 * (unique instance names across files, a readable password file) are made here.
 */
#include "gw/settings.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"
#include "gw/schema.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef GW_SCHEMA_INSTALL_DIR
#define GW_SCHEMA_INSTALL_DIR "/usr/share/iotmp-gateway/schema"
#endif
#ifndef GW_SCHEMA_SOURCE_DIR
#define GW_SCHEMA_SOURCE_DIR "schema"
#endif

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *gw_settings_schema_dir(const char *dir)
{
    if (dir)
        return dir;
    const char *env = getenv("IOTMP_GATEWAY_SCHEMA_DIR");
    if (env && *env)
        return env;
    if (is_dir(GW_SCHEMA_INSTALL_DIR))
        return GW_SCHEMA_INSTALL_DIR;
    return GW_SCHEMA_SOURCE_DIR;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = gw_malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Validates doc (kept) against schema_file. Returns 0, GW_ECONFIG or GW_ECONFIG_READ. */
static int validate_doc(const struct gw_config_doc *doc, const char *schema_file,
                        struct gw_diag_list *diags)
{
    struct gw_schema *schema = NULL;
    int rc = gw_schema_load(schema_file, &schema, diags);
    if (rc < 0)
        return GW_ECONFIG_READ; /* a missing or broken schema is an installation problem */
    rc = gw_schema_validate_doc(schema, doc, diags);
    gw_schema_free(schema);
    return rc < 0 ? GW_ECONFIG : 0;
}

/* Loads file and validates it against schema_file. On success *doc_out is the document. */
static int load_and_validate(const char *file, const char *schema_file,
                             struct gw_config_doc **doc_out, struct gw_diag_list *diags)
{
    struct gw_config_doc *doc = NULL;
    int rc = gw_config_load(file, &doc, diags);
    if (rc < 0)
        return rc == GW_EJSON ? GW_ECONFIG : rc;
    rc = validate_doc(doc, schema_file, diags);
    if (rc < 0) {
        gw_config_free(doc);
        return rc;
    }
    *doc_out = doc;
    return 0;
}

/* --- Typed readers (shape already validated) --- */

static const char *get_str(json_t *obj, const char *key, const char *def)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : def;
}

static char *dup_str(json_t *obj, const char *key, const char *def)
{
    const char *s = get_str(obj, key, def);
    return s ? gw_strdup(s) : NULL;
}

static long long get_int(json_t *obj, const char *key, long long def)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    return json_is_integer(v) ? json_integer_value(v) : def;
}

static bool get_bool(json_t *obj, const char *key, bool def)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int cmp_str(const void *a, const void *b);

/* The adapter kinds that have a schema, "modbus, mqtt, sim", into buf. */
static void known_kinds(const char *schema_dir, char *buf, size_t cap)
{
    char *dir = path_join(gw_settings_schema_dir(schema_dir), "adapters");
    DIR *d = opendir(dir);
    free(dir);
    buf[0] = '\0';
    if (!d) {
        snprintf(buf, cap, "none: the schema folder is missing");
        return;
    }
    char *names[64];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        const char *suffix = ".schema.json";
        size_t len = strlen(e->d_name), sl = strlen(suffix);
        if (len > sl && strcmp(e->d_name + len - sl, suffix) == 0)
            names[n++] = gw_strndup(e->d_name, len - sl);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", names[i]);
        if (w > 0 && (size_t)w < cap - used)
            used += (size_t)w;
        free(names[i]);
    }
}

void gw_adapter_instance_fini(struct gw_adapter_instance *inst)
{
    free(inst->type);
    free(inst->name);
    free(inst->file);
    gw_config_free(inst->doc);
    gw_value_fini(&inst->config);
    memset(inst, 0, sizeof *inst);
}

int gw_settings_load_adapter(const char *file, const char *schema_dir,
                             struct gw_adapter_instance *out, struct gw_diag_list *diags)
{
    struct gw_config_doc *doc = NULL;
    size_t before = diags ? diags->n : 0;
    int rc = gw_config_load(file, &doc, diags);
    if (rc < 0)
        return rc == GW_EJSON ? GW_ECONFIG : rc;

    /* The type picks the schema, so it is checked by hand first. */
    json_t *root = gw_config_root(doc);
    json_t *type = json_is_object(root) ? json_object_get(root, "type") : NULL;
    if (!json_is_string(type)) {
        gw_diag_add(diags, json_is_object(root) ? "/type" : "",
                    "", json_is_object(root) ? "missing required property \"type\" (the adapter "
                                               "kind: modbus, mqtt or gpio)"
                                             : "an adapter file must be a JSON object");
        gw_config_locate(doc, diags, before);
        gw_config_free(doc);
        return GW_ECONFIG;
    }
    char t[128];
    snprintf(t, sizeof t, "%s", json_string_value(type));
    bool plain = t[0] && strspn(t, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(t);
    char *schema_file = NULL;
    if (plain) {
        char name[160];
        snprintf(name, sizeof name, "adapters/%s.schema.json", t);
        schema_file = path_join(gw_settings_schema_dir(schema_dir), name);
    }
    struct stat st;
    if (!plain || stat(schema_file, &st) != 0) {
        char known[512];
        known_kinds(schema_dir, known, sizeof known);
        gw_diag_add(diags, "/type", "", "unknown adapter type \"%s\" (known: %s)", t, known);
        gw_config_locate(doc, diags, before);
        gw_config_free(doc);
        free(schema_file);
        return GW_ECONFIG;
    }
    rc = validate_doc(doc, schema_file, diags);
    free(schema_file);
    if (rc < 0) {
        gw_config_free(doc);
        return rc;
    }
    if (out) {
        out->type = gw_strdup(t);
        out->name = dup_str(root, "name", "");
        out->file = gw_strdup(file);
        out->doc = doc;
        /* The value tree replaces the JSON tree (released on the way): only the positions of
         * the document are kept, for the adapters' config_error(). */
        if (gw_config_take_value(doc, &out->config) < 0) {
            gw_adapter_instance_fini(out);
            return GW_ECONFIG;
        }
    } else {
        gw_config_free(doc);
    }
    return 0;
}

int gw_settings_check_gateway(const char *file, const char *schema_dir, struct gw_diag_list *diags)
{
    struct gw_config_doc *doc = NULL;
    char *schema = path_join(gw_settings_schema_dir(schema_dir), "gateway.schema.json");
    int rc = load_and_validate(file, schema, &doc, diags);
    free(schema);
    gw_config_free(doc);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.json files of dir, sorted. Returns the count, or GW_ECONFIG_READ. */
static int list_json_files(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    if (!d)
        return GW_ECONFIG_READ;
    size_t n = 0, cap = 8;
    char **names = gw_malloc(cap * sizeof *names);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap)
            names = gw_realloc(names, (cap *= 2) * sizeof *names);
        names[n++] = path_join(dir, e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    return (int)n;
}

int gw_settings_load(const char *gateway_file, const char *adapters_dir_override,
                     const char *schema_dir, struct gw_settings **out, struct gw_diag_list *diags)
{
    *out = NULL;
    struct gw_config_doc *doc = NULL;
    struct gw_schema *schema = NULL;
    char *schema_file = path_join(gw_settings_schema_dir(schema_dir), "gateway.schema.json");
    int rc = gw_config_load(gateway_file, &doc, diags);
    if (rc < 0) {
        free(schema_file);
        return rc == GW_EJSON ? GW_ECONFIG : rc;
    }
    rc = gw_schema_load(schema_file, &schema, diags);
    free(schema_file);
    if (rc < 0) {
        gw_config_free(doc);
        return GW_ECONFIG_READ;
    }
    int gateway_rc = gw_schema_validate_doc(schema, doc, diags);
    gw_schema_free(schema);
    if (gateway_rc < 0) {
        /* Still check the adapter files, so one run shows every problem. */
        json_t *dir = json_is_object(gw_config_root(doc))
                          ? json_object_get(gw_config_root(doc), "adapters_dir")
                          : NULL;
        const char *adir = adapters_dir_override ? adapters_dir_override
                           : json_is_string(dir)  ? json_string_value(dir)
                                                  : NULL;
        char **files = NULL;
        int n = adir ? list_json_files(adir, &files) : 0;
        for (int i = 0; i < n; i++) {
            gw_settings_load_adapter(files[i], schema_dir, NULL, diags);
            free(files[i]);
        }
        free(files);
        gw_config_free(doc);
        return GW_ECONFIG;
    }

    struct gw_settings *s = gw_calloc(1, sizeof *s);
    json_t *root = gw_config_root(doc);
    json_t *up = json_object_get(root, "uplink");
    json_t *tls = json_object_get(up, "tls");
    json_t *st = json_object_get(root, "store");
    json_t *lg = json_object_get(root, "logging");
    s->file = gw_strdup(gateway_file);
    s->url = dup_str(up, "url", NULL);
    s->user = dup_str(up, "user", NULL);
    s->device = dup_str(up, "device", NULL);
    s->password_file = dup_str(up, "password_file", NULL);
    s->keepalive_s = (unsigned)get_int(up, "keepalive", 60);
    s->connect_timeout_s = (unsigned)get_int(up, "connect_timeout", 15);
    s->reconnect_max_s = (unsigned)get_int(up, "reconnect_max", 60);
    s->reconnect_spread_s = (unsigned)get_int(up, "reconnect_spread", 60);
    s->max_frame = (size_t)get_int(up, "max_frame", 262144);
    s->send_queue = (size_t)get_int(up, "send_queue", 1048576);
    s->max_calls = (unsigned)get_int(up, "max_calls", 256);
    s->layout_embedded = strcmp(get_str(up, "server_action_layout", "linux"), "embedded") == 0;
    s->ca_file = dup_str(tls, "ca_file", NULL);
    s->cert_file = dup_str(tls, "cert_file", NULL);
    s->key_file = dup_str(tls, "key_file", NULL);
    s->insecure = get_bool(tls, "insecure", false);
    s->store_path = dup_str(st, "path", "/var/lib/iotmp-gateway/store.db");
    s->store_sync_full = strcmp(get_str(st, "synchronous", "full"), "full") == 0;
    s->store_budget_bytes = (uint64_t)get_int(st, "budget_mb", 64) << 20;
    s->store_max_age_s = (unsigned)get_int(st, "max_age", 604800);
    s->store_refuse_new = strcmp(get_str(st, "when_full", "drop_oldest"), "refuse_new") == 0;
    s->store_commit_ms = (unsigned)get_int(st, "commit_ms", 250);
    s->store_commit_rows = (unsigned)get_int(st, "commit_rows", 500);
    s->store_replay_rate = (unsigned)get_int(st, "replay_rate", 0);
    s->store_replay_window = (unsigned)get_int(st, "replay_window", 256);
    json_t *recs = json_object_get(root, "record");
    s->n_recordings = json_array_size(recs);
    s->recordings = gw_calloc(s->n_recordings + 1, sizeof *s->recordings);
    for (size_t i = 0; i < s->n_recordings; i++) {
        json_t *r = json_array_get(recs, i), *res = json_object_get(r, "resources");
        struct gw_settings_recording *x = &s->recordings[i];
        x->bucket = dup_str(r, "bucket", "");
        x->interval_ms = (unsigned)get_int(r, "interval_ms", 10000);
        x->n_resources = json_array_size(res);
        x->resources = gw_calloc(x->n_resources + 1, sizeof *x->resources);
        for (size_t k = 0; k < x->n_resources; k++)
            x->resources[k] = gw_strdup(json_string_value(json_array_get(res, k)));
    }
    s->log_level = gw_log_level_parse(get_str(lg, "level", "info"));
    s->log_frames = get_bool(lg, "frames", false);
    s->metrics_listen = dup_str(json_object_get(root, "metrics"), "listen", NULL);
    s->adapters_dir = gw_strdup(adapters_dir_override ? adapters_dir_override
                                                      : get_str(root, "adapters_dir",
                                                                "/etc/iotmp-gateway/adapters.d"));
    s->doc = doc;

    /* Adapter instances: every file is checked even after one fails. */
    char **files = NULL;
    int n = list_json_files(s->adapters_dir, &files);
    if (n < 0) {
        struct gw_diag *d = gw_diag_add(diags, NULL, NULL, "cannot read adapter folder %s: %s",
                                        s->adapters_dir, strerror(errno));
        d->file = gw_strdup(gateway_file);
        gw_settings_free(s);
        return GW_ECONFIG_READ;
    }
    s->adapters = gw_calloc((size_t)n + 1, sizeof *s->adapters);
    int worst = 0;
    for (int i = 0; i < n; i++) {
        struct gw_adapter_instance inst = {0};
        int r = gw_settings_load_adapter(files[i], schema_dir, &inst, diags);
        if (r < 0) {
            if (r == GW_ECONFIG_READ || worst == 0)
                worst = r;
        } else {
            /* Instance names prefix every resource name: they must be unique. */
            for (size_t k = 0; k < s->n_adapters; k++) {
                if (strcmp(s->adapters[k].name, inst.name) != 0)
                    continue;
                struct gw_diag_list tmp;
                gw_diag_list_init(&tmp);
                gw_diag_add(&tmp, "/name", "", "instance name \"%s\" is also used by %s "
                            "(resource names would collide)", inst.name, s->adapters[k].file);
                gw_config_locate(inst.doc, &tmp, 0);
                gw_diag_add(&tmp, "/name", "", "instance name \"%s\" is also used by %s",
                            inst.name, inst.file);
                gw_config_locate(s->adapters[k].doc, &tmp, 1);
                gw_diag_list_move(diags, &tmp);
                gw_diag_list_fini(&tmp);
                if (worst == 0)
                    worst = GW_ECONFIG;
            }
            s->adapters[s->n_adapters++] = inst;
        }
        free(files[i]);
    }
    free(files);
    if (worst < 0) {
        gw_settings_free(s);
        return worst;
    }
    *out = s;
    return 0;
}

void gw_settings_free(struct gw_settings *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_adapters; i++)
        gw_adapter_instance_fini(&s->adapters[i]);
    free(s->adapters);
    for (size_t i = 0; i < s->n_recordings; i++) {
        for (size_t k = 0; k < s->recordings[i].n_resources; k++)
            free(s->recordings[i].resources[k]);
        free(s->recordings[i].resources);
        free(s->recordings[i].bucket);
    }
    free(s->recordings);
    gw_config_free(s->doc);
    free(s->file);
    free(s->url);
    free(s->user);
    free(s->device);
    free(s->password_file);
    free(s->ca_file);
    free(s->cert_file);
    free(s->key_file);
    free(s->store_path);
    free(s->metrics_listen);
    free(s->adapters_dir);
    free(s);
}

int gw_settings_read_password(const struct gw_settings *s, char *buf, size_t cap)
{
    char path[4096];
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    bool from_systemd = false;
    if (s->password_file) {
        snprintf(path, sizeof path, "%s", s->password_file);
    } else if (creds && *creds) {
        snprintf(path, sizeof path, "%s/device-password", creds);
        from_systemd = true;
    } else {
        gw_log_err("config %s: no password_file in \"uplink\" and no systemd credential "
                   "\"device-password\" ($CREDENTIALS_DIRECTORY is not set)", s->file);
        return GW_ECONFIG;
    }
    FILE *f = fopen(path, "re");
    if (!f) {
        gw_log_err("cannot read the device password from %s: %s", path, strerror(errno));
        return GW_EACCES;
    }
    struct stat st;
    if (!from_systemd && fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
        gw_log_err("password file %s is readable by others (mode %04o): run chmod 600 %s", path,
                   (unsigned)(st.st_mode & 07777), path);
        fclose(f);
        return GW_EACCES;
    }
    if (!fgets(buf, (int)cap, f)) {
        gw_log_err("password file %s is empty", path);
        fclose(f);
        return GW_ECONFIG;
    }
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}
