#!/usr/bin/python3
"""Reference renderer for the template tests: Python's jinja2 configured as Hugging Face
transformers configures it for chat templates (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, loopcontrols, raise_exception / strftime_now globals, tojson as json.dumps with
ensure_ascii=False).

Reads a JSON array of cases on stdin and writes a JSON array of results on stdout, one per case:
  {"template": str, "context": {...}}                    -> render(**context)
  {"template": str, "chat": {"messages": [...], "tools": [...] or null,
    "add_generation_prompt": bool, "bos_token": str, "eos_token": str, "extra": {...}}}
      -> render(messages=..., tools=..., documents=None, add_generation_prompt=...,
                bos_token=..., eos_token=..., **extra), as apply_chat_template does.
Result: {"ok": true, "out": str} or {"ok": false, "error": "ExceptionType: message"}.
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, cache, case):
    source = case["template"]
    if source not in cache:  # compiling dominates the run time; cases share templates
        cache[source] = env.from_string(source)
    template = cache[source]
    if "chat" in case:
        chat = case["chat"]
        kwargs = dict(messages=chat["messages"], tools=chat.get("tools"), documents=None,
                      add_generation_prompt=chat["add_generation_prompt"],
                      bos_token=chat["bos_token"], eos_token=chat["eos_token"])
        kwargs.update(chat.get("extra") or {})
        return template.render(**kwargs)
    return template.render(**case.get("context", {}))


def main():
    env = make_env()
    cache = {}
    results = []
    for case in json.load(sys.stdin):
        try:
            results.append({"ok": True, "out": render(env, cache, case)})
        except Exception as e:  # every failure is a result to compare, not a crash
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
