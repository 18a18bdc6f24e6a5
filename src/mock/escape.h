/*
** Writing JSON strings: escaping bytes as the inside of a JSON string.
*/
#ifndef MOCK_ESCAPE_H
#define MOCK_ESCAPE_H

#include <stddef.h>

#include "buf.h"

/*
** Escapes len bytes as the inside of a JSON string (no quotes). dst needs
** room for 6 * len bytes. Invalid UTF-8 becomes U+FFFD. Returns bytes written.
*/
size_t mock_json_escape(char *dst, const char *src, size_t len);
/* Appends "src" with quotes. */
void mock_buf_json_string(mock_buf *b, const char *src, size_t len);

#endif
