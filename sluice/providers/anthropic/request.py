"""Canonical (OpenAI chat) request → Anthropic Messages request body.

https://docs.anthropic.com/en/api/messages#body
"""

from __future__ import annotations

from typing import Any

import orjson

from sluice.errors import validation
from sluice.schema import ChatRequest

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI callers may omit it

# `response_format` has no Messages counterpart; the documented approximation is an
# instruction in the system prompt (https://docs.anthropic.com/en/docs/test-and-evaluate/
# strengthen-guardrails/increase-consistency#specify-the-desired-output-format).
_JSON_INSTRUCTION = "Respond only with a single valid JSON object and no other text."


def _text_of(content: Any, where: str) -> str:
    """The text of a system/developer/tool message (a string or text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, p in enumerate(content):
        if p.get("type") != "text" or not isinstance(p.get("text"), str):
            raise validation(f"{where}.content[{i}]", "only text parts are allowed here")
        parts.append(p["text"])
    return "\n".join(parts)


def _source(url: str, where: str) -> dict[str, Any]:
    """A URL → an Anthropic content source: data URLs become base64 sources.

    https://docs.anthropic.com/en/docs/build-with-claude/vision#base64-encoded-image-example
    """
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media, _, enc = head[5:].partition(";")
        if not sep or enc != "base64" or not media:
            raise validation(where, "a data URL must be data:<media type>;base64,<data>")
        return {"type": "base64", "media_type": media, "data": data}
    return {"type": "url", "url": url}


def _file(part: dict[str, Any], where: str) -> dict[str, Any]:
    """An OpenAI `file` part with inline data → a document block (PDFs:
    https://docs.anthropic.com/en/docs/build-with-claude/pdf-support)."""
    data = (part.get("file") or {}).get("file_data")
    if not isinstance(data, str) or not data.startswith("data:"):
        raise validation(f"{where}.file.file_data", "give the file inline as a data URL")
    return {"type": "document", "source": _source(data, f"{where}.file.file_data")}


def _user_blocks(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for i, p in enumerate(content or ()):
        kind = p.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(p.get("text", ""))})
        elif kind == "image_url":
            img = p.get("image_url")
            url = img.get("url") if isinstance(img, dict) else img
            if not isinstance(url, str):
                raise validation(f"{where}.content[{i}].image_url.url", "must be a string")
            source = _source(url, f"{where}.content[{i}].image_url.url")
            blocks.append({"type": "image", "source": source})
        elif kind == "file":
            blocks.append(_file(p, f"{where}.content[{i}]"))
        else:
            raise validation(f"{where}.content[{i}].type", f"unsupported part type {kind!r}")
    return blocks


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Assistant text plus `tool_calls` → text and tool_use blocks."""
    text = _text_of(m.get("content"), where)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, call in enumerate(m.get("tool_calls") or ()):
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise validation(f"{where}.tool_calls[{i}].function.arguments", "not JSON") from None
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}
        )
    return blocks


def _results_turn(out: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The last turn's blocks when it is a user turn holding tool results."""
    if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
        blocks: list[dict[str, Any]] = out[-1]["content"]
        if blocks and blocks[0].get("type") == "tool_result":
            return blocks
    return None


def _messages(chat_messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts and Messages turns; tool results join one user turn (consecutive merged).

    https://docs.anthropic.com/en/docs/build-with-claude/tool-use#handling-tool-use-and-tool-result-content-blocks
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(chat_messages):
        role, where = m["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content"), where))
            continue
        if role in ("tool", "function"):
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id") or m.get("name"),
                "content": _text_of(m.get("content"), where),
            }
            turn = _results_turn(out)
            if turn is None:
                out.append({"role": "user", "content": [block]})
            else:  # tool_result blocks come first in their turn
                turn.insert(sum(b["type"] == "tool_result" for b in turn), block)
            continue
        if role == "assistant":
            blocks = _assistant_blocks(m, where)
            if blocks:  # Anthropic refuses an empty assistant turn; it carries nothing
                out.append({"role": "assistant", "content": blocks})
            continue
        content = _user_blocks(m.get("content"), where)
        turn = _results_turn(out)
        if turn is not None:  # a user message right after tool results shares their turn
            turn.extend(
                [{"type": "text", "text": content}] if isinstance(content, str) else content
            )
        else:
            out.append({"role": "user", "content": content})
    return system, out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    """OpenAI tool_choice → Anthropic's (https://docs.anthropic.com/en/docs/build-with-claude/tool-use#forcing-tool-use)."""
    if choice is None and parallel is not False:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise validation("tool_choice", "must be auto, none, required or a named function")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function")
        if t.get("type") != "function" or not isinstance(fn, dict) or "name" not in fn:
            raise validation(f"tools[{i}]", "only function tools with a name are supported")
        tool = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def messages_body(chat: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The canonical request as a Messages request body."""
    b = chat.body
    if (b.get("n") or 1) > 1:
        raise validation("n", "Anthropic returns one choice; n must be 1")
    system, turns = _messages(b["messages"])
    fmt = b.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        schema = (fmt.get("json_schema") or {}).get("schema")
        hint = f" It must match this JSON schema: {orjson.dumps(schema).decode()}" if schema else ""
        system.append(_JSON_INSTRUCTION + hint)
    out: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": chat.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    if b.get("temperature") is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1: clamp rather than fail the request.
        out["temperature"] = min(float(b["temperature"]), 1.0)
    if b.get("top_p") is not None:
        out["top_p"] = b["top_p"]
    stop = b.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    if b.get("tools"):
        out["tools"] = _tools(b["tools"])
    choice = _tool_choice(b.get("tool_choice"), b.get("parallel_tool_calls"))
    if choice is not None and b.get("tools"):
        out["tool_choice"] = choice
    if isinstance(b.get("user"), str):
        out["metadata"] = {"user_id": b["user"]}
    if chat.stream:
        out["stream"] = True  # Anthropic streams always carry usage: nothing to force
    return out
