/*
** A small JSON reader (text to a tree, enough for request bodies) and the
** string escaper every response is written with.
*/
#ifndef MOCK_JSON_H
#define MOCK_JSON_H

#include <stddef.h>

#include "buf.h"

#define MOCK_JSON_MAX_DEPTH 64

typedef enum mock_json_type {
  MOCK_JSON_NULL,
  MOCK_JSON_FALSE,
  MOCK_JSON_TRUE,
  MOCK_JSON_NUMBER,
  MOCK_JSON_STRING,
  MOCK_JSON_ARRAY,
  MOCK_JSON_OBJECT
} mock_json_type;

typedef struct mock_json mock_json;
struct mock_json {
  mock_json_type type;
  double number;
  const char *string;     /* NUL-terminated; may contain NULs from \u0000 */
  size_t length;          /* bytes in string */
  const char *key;        /* set on members of an object */
  size_t key_length;
  mock_json *child;       /* first item or member */
  mock_json *next;        /* next sibling */
  size_t count;           /* items or members */
};

/* Owns every node and string of one parse. */
typedef struct mock_json_doc mock_json_doc;

/*
** Parses len bytes of text. Returns the root (owned by *doc, free it with
** mock_json_free) or NULL with a short message in err.
*/
mock_json *mock_json_parse(const char *text, size_t len, mock_json_doc **doc,
                           char *err, size_t err_size);
void mock_json_free(mock_json_doc *doc);

/* The first member named key of an object, or NULL. */
const mock_json *mock_json_get(const mock_json *object, const char *key);
int mock_json_is_true(const mock_json *value);

/*
** Escapes len bytes as the inside of a JSON string (no quotes). dst needs
** room for 6 * len bytes. Invalid UTF-8 becomes U+FFFD. Returns bytes written.
*/
size_t mock_json_escape(char *dst, const char *src, size_t len);
/* Appends "src" with quotes. */
void mock_buf_json_string(mock_buf *b, const char *src, size_t len);

#endif
