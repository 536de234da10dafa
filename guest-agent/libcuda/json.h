/* A small JSON reader for the host's WELCOME: parses a whole text into a tree, nothing more. */
#ifndef KVMGPU_JSON_H
#define KVMGPU_JSON_H

#include <stddef.h>
#include <stdint.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
    enum json_type type;
    char *key;           /* the member's name, inside an object; else NULL */
    char *string;        /* JSON_STRING: the decoded text (NUL-terminated; a \u0000 ends it) */
    double number;       /* JSON_NUMBER, JSON_BOOL (0 or 1) */
    int integral;        /* JSON_NUMBER: whether the text was an integer that fits int64_t */
    int64_t integer;     /* ... its value */
    struct json *child;  /* JSON_ARRAY, JSON_OBJECT: the first element or member */
    struct json *next;   /* the next element or member of the parent */
};

/* The tree of `text` (`len` bytes), or NULL with a message in `err` (malformed, too deep, or
 * out of memory). Free it with json_free. */
struct json *json_parse(const char *text, size_t len, char *err, size_t errlen);
void json_free(struct json *node);

/* The member `key` of an object (NULL when absent or `obj` is not an object). */
const struct json *json_get(const struct json *obj, const char *key);
/* Whether `node` is an integer in [min, max]; then it is stored in `out`. */
int json_int(const struct json *node, int64_t min, int64_t max, int64_t *out);

#endif
