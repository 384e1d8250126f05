/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's configuration: the gateway file (schema/gateway.schema.json) and one file per
 * adapter instance (schema/adapters/<type>.schema.json), loaded, validated and turned into typed
 * settings. Every problem in every file is reported (file:line:col: /pointer: message), never just
 * the first. Used by iotmp-gatewayd at start-up, on SIGHUP and by `iotmp-gatewayd validate`.
 *
 * Resource names are "<instance name>/<point>", so instance names must be unique across files;
 * a duplicate is reported at both files.
 */
#ifndef GW_SETTINGS_H
#define GW_SETTINGS_H

#include "gw/config.h"
#include "gw/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_SETTINGS_DEFAULT_FILE "/etc/iotmp-gateway/gateway.json"

struct gw_adapter_instance {
    char *type;                 /* "modbus" */
    char *name;                 /* instance name, "plc1" */
    char *file;                 /* its file */
    struct gw_config_doc *doc;  /* the parsed file, for positions of later (semantic) errors; its
                                   JSON tree is gone (config holds the values, gw_config_root()
                                   is NULL): gw_config_take_value() */
    struct gw_value config;     /* the whole file as a value tree */
};

struct gw_settings_recording {
    char *bucket;
    char **resources;
    size_t n_resources;
    unsigned interval_ms;
};

struct gw_settings {
    char *file;
    struct gw_config_doc *doc;  /* the gateway file, for positions of later (semantic) errors */
    /* uplink */
    char *url, *user, *device, *password_file;
    unsigned keepalive_s, connect_timeout_s, reconnect_max_s, reconnect_spread_s;
    size_t max_frame, send_queue;
    unsigned max_calls;         /* uplink.max_calls: the broker's calls running at once */
    bool layout_embedded;
    char *ca_file, *cert_file, *key_file;
    bool insecure;
    /* store */
    char *store_path;
    bool store_sync_full, store_refuse_new;
    uint64_t store_budget_bytes;
    unsigned store_max_age_s, store_commit_ms, store_commit_rows, store_replay_rate;
    unsigned store_replay_window;
    /* recordings ("record") */
    struct gw_settings_recording *recordings;
    size_t n_recordings;
    char *metrics_listen;       /* NULL = no metrics endpoint */
    /* logging */
    int log_level;
    bool log_frames;
    /* adapters */
    char *adapters_dir;
    struct gw_adapter_instance *adapters;
    size_t n_adapters;
};

/*
 * Where schemas are looked up: dir if not NULL, else $IOTMP_GATEWAY_SCHEMA_DIR, else the installed
 * folder, else the source tree's schema/ (so a build directory works without installing).
 * Returns a borrowed string valid until the next call.
 */
const char *gw_settings_schema_dir(const char *dir);

/*
 * Loads and validates gateway_file and the adapter files of its adapters_dir (or of
 * adapters_dir_override when not NULL). Returns 0 and *out (free with gw_settings_free);
 * GW_ECONFIG when anything is invalid (every problem in diags, *out NULL); GW_ECONFIG_READ when
 * a file or the schema cannot be read (also in diags).
 */
int gw_settings_load(const char *gateway_file, const char *adapters_dir_override,
                     const char *schema_dir, struct gw_settings **out, struct gw_diag_list *diags);

/*
 * Validates one adapter instance file against its type's schema and appends problems to diags.
 * On success and if out is not NULL, fills *out (the caller owns it; free with
 * gw_adapter_instance_fini). Returns 0, GW_ECONFIG or GW_ECONFIG_READ.
 */
int gw_settings_load_adapter(const char *file, const char *schema_dir,
                             struct gw_adapter_instance *out, struct gw_diag_list *diags);
void gw_adapter_instance_fini(struct gw_adapter_instance *inst);

/* Validates a gateway file alone (no adapters). Returns 0, GW_ECONFIG or GW_ECONFIG_READ. */
int gw_settings_check_gateway(const char *file, const char *schema_dir, struct gw_diag_list *diags);

void gw_settings_free(struct gw_settings *s);

/*
 * Reads the device password: password_file if set, else the systemd credential "device-password"
 * in $CREDENTIALS_DIRECTORY. The first line, without its newline, into buf (cap bytes). Refuses a
 * password_file readable by group or others, naming the file and its mode. Returns 0 or a GW_E
 * code with a log line that says what to fix.
 */
int gw_settings_read_password(const struct gw_settings *s, char *buf, size_t cap);

#endif
