/*
** sluice-mock --replies FILE: scripted conversations, so agent loops can be
** tested offline and deterministically. FILE holds ordered rules matched
** against a chat request's messages; the first rule whose conditions all hold
** decides the reply. A request no rule matches gets the default generation.
**
**   {"rules": [
**     {"name": "answer",
**      "when": {"last_role": "tool"},
**      "reply": {"text": "The tool said {{tool}}.", "tokens_per_sec": 100}},
**     {"name": "add",
**      "when": {"last_role": "user", "last_contains": "add", "tools": true},
**      "reply": {"tool_calls": [{"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}]}},
**     {"reply": {"text": "I have nothing to add."}}
**   ]}
**
** A rule is an object with "reply" (required), "when" and "name" (optional,
** at most 256 bytes; shown in /stats and the log). Conditions in "when", all
** of which must hold (no "when", or an empty one, holds for every request):
**
**   last_role         the last message's role equals this string
**   last_contains     the last message's content contains this string
**   last_starts_with  the last message's content starts with this string
**   any_contains      some message's content contains this string
**   system_contains   a system (or developer) message's content contains it
**   turn              the number of assistant messages equals this integer
**   min_turn          ... is at least this integer
**   max_turn          ... is at most this integer
**   tools             true: the request has a non-empty "tools" array;
**                     false: it has none
**
** Substrings are matched byte for byte (case matters). A message's content is
** a string, or an array of parts whose "text" strings count, joined by "\n";
** anything else (the null content of an assistant's tool_calls message)
** reads as "". A request with no messages fails every last_* condition.
**
** "reply" is a mock options object (text, tool_calls, tokens_per_sec, ttft,
** keyword, status, faults...), applied as if the request's body had carried
** it as "mock"; the body's own "mock" object and the X-Mock header still win,
** key by key. Every string in it may hold placeholders, filled in per request:
**
**   {{last}}  the content of the last message
**   {{user}}  the content of the last user message
**   {{tool}}  the content of the last tool message
**
** ("" when there is no such message). Any other {{name}} is a mistake; a
** "{{" not followed by a name and "}}" is kept as it is.
**
** The whole file is checked at start-up (unknown keys, wrong types, every
** reply read as a request's mock object would be); a mistake stops the mock
** with a message naming the rule. Rules apply to /v1/chat/completions only.
*/
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mock.h"

enum condition {
  LAST_ROLE, LAST_CONTAINS, LAST_STARTS_WITH, ANY_CONTAINS, SYSTEM_CONTAINS,
  TURN, MIN_TURN, MAX_TURN, TOOLS, CONDITION_COUNT
};

static const char *const condition_names[CONDITION_COUNT] = {
  "last_role", "last_contains", "last_starts_with", "any_contains", "system_contains",
  "turn", "min_turn", "max_turn", "tools",
};

enum placeholder { LAST, USER, TOOL, PLACEHOLDER_COUNT };

static const char *const placeholder_names[PLACEHOLDER_COUNT] = {"last", "user", "tool"};
static const char *const placeholder_roles[PLACEHOLDER_COUNT] = {NULL, "user", "tool"};

typedef struct rule {
  char *name;                           /* NULL when unnamed */
  const json_t *when[CONDITION_COUNT];  /* NULL where not asked */
  const json_t *reply;
  int fills;                            /* its strings hold placeholders */
} rule;

struct mock_replies {
  json_t *root;                         /* owns every json_t the rules point to */
  rule *rules;
  size_t count;
};

/* ---- a request's messages --------------------------------------------- */

typedef struct conversation {
  const json_t *messages;               /* an array, or NULL */
  const json_t *last;                   /* the last message, or NULL */
  uint64_t turn;                        /* assistant messages */
  int tools;                            /* a non-empty "tools" array */
} conversation;

static const char *role_of(const json_t *message) {
  const char *role = json_string_value(json_object_get(message, "role"));
  return role ? role : "";
}

/* A message's content as text: in the message itself when it is a string,
   else the text parts joined in scratch. */
static const char *content_of(const json_t *message, mock_buf *scratch, size_t *len) {
  const json_t *content = json_object_get(message, "content");
  size_t i;
  const json_t *part;
  if (json_is_string(content)) {
    *len = json_string_length(content);
    return json_string_value(content);
  }
  scratch->len = 0;
  json_array_foreach(content, i, part) {
    const json_t *text = json_object_get(part, "text");
    if (!json_is_string(text))
      continue;
    if (scratch->len > 0)
      mock_buf_append(scratch, "\n", 1);
    mock_buf_append(scratch, json_string_value(text), json_string_length(text));
  }
  *len = scratch->len;
  return scratch->data ? scratch->data : "";
}

static int contains(const char *hay, size_t hay_len, const json_t *needle) {
  size_t len = json_string_length(needle);
  return len == 0 || memmem(hay, hay_len, json_string_value(needle), len) != NULL;
}

/* The last message with the role, or NULL. */
static const json_t *last_with_role(const conversation *cv, const char *role) {
  for (size_t i = json_array_size(cv->messages); i-- > 0;) {
    const json_t *m = json_array_get(cv->messages, i);
    if (strcmp(role_of(m), role) == 0)
      return m;
  }
  return NULL;
}

static int some_message_contains(const conversation *cv, const json_t *needle,
                                 int system_only, mock_buf *scratch) {
  size_t i, len;
  const json_t *m;
  json_array_foreach(cv->messages, i, m) {
    const char *role = role_of(m);
    if (system_only && strcmp(role, "system") != 0 && strcmp(role, "developer") != 0)
      continue;
    const char *text = content_of(m, scratch, &len);
    if (contains(text, len, needle))
      return 1;
  }
  return 0;
}

static int holds(enum condition k, const json_t *want, const conversation *cv,
                 mock_buf *scratch) {
  size_t len;
  const char *text;
  switch (k) {
  case LAST_ROLE:
    return cv->last && strcmp(role_of(cv->last), json_string_value(want)) == 0;
  case LAST_CONTAINS:
    if (!cv->last)
      return 0;
    text = content_of(cv->last, scratch, &len);
    return contains(text, len, want);
  case LAST_STARTS_WITH:
    if (!cv->last)
      return 0;
    text = content_of(cv->last, scratch, &len);
    return len >= json_string_length(want) &&
           memcmp(text, json_string_value(want), json_string_length(want)) == 0;
  case ANY_CONTAINS:
    return some_message_contains(cv, want, 0, scratch);
  case SYSTEM_CONTAINS:
    return some_message_contains(cv, want, 1, scratch);
  case TURN:
    return cv->turn == (uint64_t)json_integer_value(want);
  case MIN_TURN:
    return cv->turn >= (uint64_t)json_integer_value(want);
  case MAX_TURN:
    return cv->turn <= (uint64_t)json_integer_value(want);
  case TOOLS:
    return json_is_true(want) == cv->tools;
  default:
    return 0;
  }
}

/* ---- placeholders ----------------------------------------------------- */

/*
** Is s[at] the start of a placeholder? 0 when it is not ("{{" without a
** lower-case name and "}}" after it); else its length, with *which its index
** or PLACEHOLDER_COUNT for an unknown name.
*/
static size_t placeholder_at(const char *s, size_t len, size_t at, int *which) {
  size_t i = at + 2;
  if (at + 2 > len || s[at] != '{' || s[at + 1] != '{')
    return 0;
  while (i < len && ((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
    i++;
  if (i == at + 2 || i + 2 > len || s[i] != '}' || s[i + 1] != '}')
    return 0;
  *which = PLACEHOLDER_COUNT;
  for (int p = 0; p < PLACEHOLDER_COUNT; p++)
    if (strlen(placeholder_names[p]) == i - at - 2 &&
        memcmp(s + at + 2, placeholder_names[p], i - at - 2) == 0)
      *which = p;
  return i + 2 - at;
}

/* Fills the placeholders of every string in v (a copy the request owns). */
static void fill(json_t *v, const conversation *cv, mock_buf *out, mock_buf *scratch) {
  size_t i;
  const char *key;
  json_t *item;
  if (json_is_object(v)) {
    json_object_foreach(v, key, item)
      fill(item, cv, out, scratch);
    return;
  }
  if (json_is_array(v)) {
    json_array_foreach(v, i, item)
      fill(item, cv, out, scratch);
    return;
  }
  if (!json_is_string(v))
    return;
  const char *s = json_string_value(v);
  size_t len = json_string_length(v), done = 0, n;
  int which, changed = 0;
  out->len = 0;
  for (i = 0; i < len; i++) {
    if ((n = placeholder_at(s, len, i, &which)) == 0 || which == PLACEHOLDER_COUNT)
      continue; /* (unknown names were refused at start-up) */
    const json_t *m = which == LAST ? cv->last : last_with_role(cv, placeholder_roles[which]);
    size_t value_len = 0;
    const char *value = m ? content_of(m, scratch, &value_len) : "";
    mock_buf_append(out, s + done, i - done);
    mock_buf_append(out, value, value_len);
    done = i + n;
    i = done - 1;
    changed = 1;
  }
  if (changed) {
    mock_buf_append(out, s + done, len - done);
    json_string_setn(v, out->data ? out->data : "", out->len);
  }
}

/* ---- matching --------------------------------------------------------- */

int mock_replies_match(const mock_replies *r, const json_t *request, json_t **reply,
                       const char **name) {
  conversation cv = {NULL, NULL, 0, 0};
  const json_t *messages = json_object_get(request, "messages");
  const json_t *tools = json_object_get(request, "tools");
  size_t i;
  const json_t *m;
  mock_buf scratch;
  int found = -1;
  *reply = NULL;
  *name = NULL;
  if (json_is_array(messages)) {
    cv.messages = messages;
    size_t count = json_array_size(messages);
    cv.last = count > 0 ? json_array_get(messages, count - 1) : NULL;
    json_array_foreach(messages, i, m)
      cv.turn += strcmp(role_of(m), "assistant") == 0;
  }
  cv.tools = json_is_array(tools) && json_array_size(tools) > 0;
  mock_buf_init(&scratch);
  for (i = 0; i < r->count && found < 0; i++) {
    const rule *rl = &r->rules[i];
    int all = 1;
    for (int k = 0; k < CONDITION_COUNT && all; k++)
      all = rl->when[k] == NULL || holds((enum condition)k, rl->when[k], &cv, &scratch);
    if (all)
      found = (int)i;
  }
  if (found >= 0) {
    const rule *rl = &r->rules[found];
    *name = rl->name;
    if (rl->fills) {
      mock_buf out;
      mock_buf_init(&out);
      *reply = json_deep_copy(rl->reply);
      fill(*reply, &cv, &out, &scratch);
      mock_buf_free(&out);
    } else {
      *reply = json_incref((json_t *)rl->reply);
    }
  }
  mock_buf_free(&scratch);
  return found;
}

/* ---- loading ---------------------------------------------------------- */

/* Checks the placeholders in every string of v: -1 with err set on an unknown
   one, else whether there are any. */
static int check_placeholders(const json_t *v, const char *where, char *err,
                              size_t err_size) {
  size_t i, n;
  const char *key;
  const json_t *item;
  int found = 0, rc, which;
  if (json_is_array(v)) {
    json_array_foreach(v, i, item) {
      if ((rc = check_placeholders(item, where, err, err_size)) < 0)
        return -1;
      found |= rc;
    }
    return found;
  }
  if (json_is_object(v)) {
    json_object_foreach((json_t *)v, key, item) {
      if ((rc = check_placeholders(item, where, err, err_size)) < 0)
        return -1;
      found |= rc;
    }
    return found;
  }
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  for (i = 0; s && i < len; i++) {
    if ((n = placeholder_at(s, len, i, &which)) == 0)
      continue;
    if (which == PLACEHOLDER_COUNT) {
      snprintf(err, err_size, "%s.reply: unknown placeholder %.*s (known: {{last}}, "
               "{{user}}, {{tool}})", where, (int)(n > 64 ? 64 : n), s + i);
      return -1;
    }
    found = 1;
  }
  return found;
}

static int check_condition(enum condition k, const json_t *v, const char *where, char *err,
                           size_t err_size) {
  const char *name = condition_names[k];
  if (k == TOOLS) {
    if (!json_is_boolean(v)) {
      snprintf(err, err_size, "%s.when.%s must be true or false", where, name);
      return -1;
    }
  } else if (k >= TURN) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
      snprintf(err, err_size, "%s.when.%s must be a non-negative integer", where, name);
      return -1;
    }
  } else if (!json_is_string(v)) {
    snprintf(err, err_size, "%s.when.%s must be a string", where, name);
    return -1;
  }
  return 0;
}

static int load_rule(rule *rl, const json_t *v, size_t index, const mock_config *cfg,
                     char *err, size_t err_size) {
  char where[32], why[256];
  const char *key;
  const json_t *item;
  snprintf(where, sizeof where, "rules[%zu]", index);
  if (!json_is_object(v)) {
    snprintf(err, err_size, "%s must be an object with \"reply\" (and \"when\", \"name\")",
             where);
    return -1;
  }
  json_object_foreach((json_t *)v, key, item) {
    if (strcmp(key, "name") != 0 && strcmp(key, "when") != 0 && strcmp(key, "reply") != 0) {
      snprintf(err, err_size, "%s: unknown key \"%.64s\" (known: name, when, reply)", where,
               key);
      return -1;
    }
  }
  const json_t *name = json_object_get(v, "name");
  if (name) {
    size_t len = json_string_length(name);
    if (!json_is_string(name) || len == 0 || len > MOCK_MAX_RULE_NAME ||
        strlen(json_string_value(name)) != len) {
      snprintf(err, err_size, "%s.name must be a string of 1 to %d bytes", where,
               MOCK_MAX_RULE_NAME);
      return -1;
    }
    rl->name = mock_xstrndup(json_string_value(name), len);
  }
  const json_t *when = json_object_get(v, "when");
  if (when && !json_is_object(when)) {
    snprintf(err, err_size, "%s.when must be an object", where);
    return -1;
  }
  if (when) {
    json_object_foreach((json_t *)when, key, item) {
      int k = 0;
      while (k < CONDITION_COUNT && strcmp(key, condition_names[k]) != 0)
        k++;
      if (k == CONDITION_COUNT) {
        snprintf(err, err_size, "%s.when: unknown condition \"%.64s\" (known: last_role, "
                 "last_contains, last_starts_with, any_contains, system_contains, turn, "
                 "min_turn, max_turn, tools)", where, key);
        return -1;
      }
      if (check_condition((enum condition)k, item, where, err, err_size) < 0)
        return -1;
      rl->when[k] = item;
    }
  }
  rl->reply = json_object_get(v, "reply");
  if (!json_is_object(rl->reply)) {
    snprintf(err, err_size, "%s.reply must be an object of mock options", where);
    return -1;
  }
  if (mock_request_check(rl->reply, cfg, why, sizeof why) < 0) {
    snprintf(err, err_size, "%s.reply: %s", where, why);
    return -1;
  }
  int fills = check_placeholders(rl->reply, where, err, err_size);
  if (fills < 0)
    return -1;
  rl->fills = fills;
  return 0;
}

mock_replies *mock_replies_load(const char *path, const mock_config *cfg, char *err,
                                size_t err_size) {
  json_error_t why;
  const char *key;
  const json_t *item;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &why);
  if (root == NULL) {
    if (why.line > 0)
      snprintf(err, err_size, "not valid JSON: %s (line %d, column %d)", why.text, why.line,
               why.column);
    else
      snprintf(err, err_size, "%s", why.text);
    return NULL;
  }
  mock_replies *r = mock_xcalloc(1, sizeof *r);
  r->root = root;
  const json_t *rules = json_object_get(root, "rules");
  if (!json_is_object(root) || !json_is_array(rules)) {
    snprintf(err, err_size, "must be a JSON object {\"rules\": [...]}");
    goto fail;
  }
  json_object_foreach(root, key, item) {
    if (strcmp(key, "rules") != 0) {
      snprintf(err, err_size, "unknown key \"%.64s\" (the file holds only \"rules\")", key);
      goto fail;
    }
  }
  r->rules = mock_xcalloc(json_array_size(rules), sizeof *r->rules);
  for (size_t i = 0; i < json_array_size(rules); i++) {
    r->count++;
    if (load_rule(&r->rules[i], json_array_get(rules, i), i, cfg, err, err_size) < 0)
      goto fail;
  }
  return r;
fail:
  mock_replies_free(r);
  return NULL;
}

void mock_replies_free(mock_replies *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->count; i++)
    free(r->rules[i].name);
  free(r->rules);
  json_decref(r->root);
  free(r);
}
