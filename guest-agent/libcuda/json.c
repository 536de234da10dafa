/* A small JSON reader (RFC 8259) for the host's WELCOME: recursive descent into a tree of
 * nodes, with a depth limit; every string decoded, \u escapes (and surrogate pairs) to UTF-8. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 32

struct reader {
    const char *start, *p, *end;
    char *err;
    size_t errlen;
};

static struct json *fail(struct reader *r, const char *what)
{
    if (r->err && r->err[0] == '\0')
        snprintf(r->err, r->errlen, "%s at byte %td", what, r->p - r->start);
    return NULL;
}

static void skip_space(struct reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static struct json *node(enum json_type type)
{
    struct json *n = calloc(1, sizeof *n);
    if (n)
        n->type = type;
    return n;
}

static int hex4(struct reader *r, unsigned *out)
{
    unsigned v = 0;
    if (r->end - r->p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char c = *r->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string's text, r->p just past its opening quote; NULL when malformed. */
static char *string_text(struct reader *r)
{
    const char *start = r->p;
    size_t cap = 1;
    while (r->p < r->end && *r->p != '"') { /* an upper bound of the decoded size */
        if (*r->p == '\\' && r->p + 1 < r->end)
            r->p++;
        r->p++;
        cap += 4;
    }
    if (r->p >= r->end)
        return fail(r, "unterminated string"), NULL;
    r->p = start;
    char *out = malloc(cap), *o = out;
    if (!out)
        return fail(r, "out of memory"), NULL;
    while (*r->p != '"') {
        unsigned char c = (unsigned char)*r->p++;
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            *o++ = (char)c;
            continue;
        }
        char e = *r->p++;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(r, &cp))
                goto bad;
            if (cp >= 0xD800 && cp < 0xDC00) {
                if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u')
                    goto bad;
                r->p += 2;
                if (hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                goto bad;
            }
            o += put_utf8(o, cp);
            break;
        }
        default:
            goto bad;
        }
    }
    r->p++;
    *o = '\0';
    return out;
bad:
    free(out);
    return fail(r, "bad string"), NULL;
}

static struct json *value(struct reader *r, int depth);

static struct json *container(struct reader *r, int depth, int object)
{
    struct json *n = node(object ? JSON_OBJECT : JSON_ARRAY), **tail;
    if (!n)
        return fail(r, "out of memory");
    tail = &n->child;
    r->p++;
    skip_space(r);
    if (r->p < r->end && *r->p == (object ? '}' : ']')) {
        r->p++;
        return n;
    }
    for (;;) {
        char *key = NULL;
        skip_space(r);
        if (object) {
            if (r->p >= r->end || *r->p != '"')
                goto bad;
            r->p++;
            if (!(key = string_text(r)))
                goto bad;
            skip_space(r);
            if (r->p >= r->end || *r->p != ':') {
                free(key);
                goto bad;
            }
            r->p++;
        }
        struct json *v = value(r, depth + 1);
        if (!v) {
            free(key);
            goto bad;
        }
        v->key = key;
        *tail = v;
        tail = &v->next;
        skip_space(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == (object ? '}' : ']')) {
            r->p++;
            return n;
        }
        goto bad;
    }
bad:
    json_free(n);
    return fail(r, object ? "bad object" : "bad array");
}

static struct json *number(struct reader *r)
{
    const char *s = r->p;
    if (r->p < r->end && *r->p == '-')
        r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return fail(r, "bad value");
    int integral = 1;
    while (r->p < r->end && ((*r->p >= '0' && *r->p <= '9') || *r->p == '.' || *r->p == 'e' ||
                             *r->p == 'E' || *r->p == '+' || *r->p == '-')) {
        if (*r->p == '.' || *r->p == 'e' || *r->p == 'E')
            integral = 0;
        r->p++;
    }
    char buf[64];
    size_t len = (size_t)(r->p - s);
    if (len >= sizeof buf)
        return fail(r, "number too long");
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct json *n = node(JSON_NUMBER);
    if (!n)
        return fail(r, "out of memory");
    char *endp;
    n->number = strtod(buf, &endp);
    if (*endp != '\0' || !isfinite(n->number)) {
        free(n);
        return fail(r, "bad number");
    }
    if (integral) {
        errno = 0;
        long long v = strtoll(buf, &endp, 10);
        if (errno == 0 && *endp == '\0') {
            n->integral = 1;
            n->integer = v;
        }
    }
    return n;
}

static struct json *literal(struct reader *r, const char *word, enum json_type type, double v)
{
    size_t len = strlen(word);
    if ((size_t)(r->end - r->p) < len || memcmp(r->p, word, len) != 0)
        return fail(r, "bad value");
    r->p += len;
    struct json *n = node(type);
    if (!n)
        return fail(r, "out of memory");
    n->number = v;
    return n;
}

static struct json *value(struct reader *r, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return fail(r, "nested too deeply");
    skip_space(r);
    if (r->p >= r->end)
        return fail(r, "unexpected end");
    switch (*r->p) {
    case '{':
        return container(r, depth, 1);
    case '[':
        return container(r, depth, 0);
    case '"': {
        r->p++;
        char *text = string_text(r);
        if (!text)
            return NULL;
        struct json *n = node(JSON_STRING);
        if (!n) {
            free(text);
            return fail(r, "out of memory");
        }
        n->string = text;
        return n;
    }
    case 't':
        return literal(r, "true", JSON_BOOL, 1);
    case 'f':
        return literal(r, "false", JSON_BOOL, 0);
    case 'n':
        return literal(r, "null", JSON_NULL, 0);
    default:
        return number(r);
    }
}

struct json *json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    struct reader r = {text, text, text + len, err, errlen};
    if (err && errlen)
        err[0] = '\0';
    struct json *root = value(&r, 0);
    if (!root)
        return NULL;
    skip_space(&r);
    if (r.p != r.end) {
        json_free(root);
        return fail(&r, "trailing bytes");
    }
    return root;
}

void json_free(struct json *n)
{
    while (n) {
        struct json *next = n->next;
        json_free(n->child);
        free(n->key);
        free(n->string);
        free(n);
        n = next;
    }
}

const struct json *json_get(const struct json *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT)
        return NULL;
    for (const struct json *m = obj->child; m; m = m->next)
        if (strcmp(m->key, key) == 0)
            return m;
    return NULL;
}

int json_int(const struct json *n, int64_t min, int64_t max, int64_t *out)
{
    if (!n || n->type != JSON_NUMBER || !n->integral || n->integer < min || n->integer > max)
        return 0;
    *out = n->integer;
    return 1;
}
