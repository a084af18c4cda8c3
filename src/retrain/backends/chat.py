"""Prompts as chat-templated token ids, and the tokens that end an assistant turn.

Every backend feeds the model the same ids for a prompt (a single user message with the assistant
turn opened), so the local and the tinker backend train on identical sequences.

Example::

    ids = chat_prompt_ids(tokenizer, "What is 2 + 3?")   # <|im_start|>user ... <|im_start|>assistant\\n
    stops = end_of_turn_ids(tokenizer)                   # e.g. {<|im_end|>} for ChatML
    ids = cached_prompt_ids(cache, tokenizer, prompt)    # what a backend calls: once per distinct prompt
"""

from __future__ import annotations

from typing import Any

PROBE = "retrain-probe"  # an assistant message whose end the template marks


def chat_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of `prompt` as one user message with the assistant turn opened (raw text for a
    tokenizer without a chat template, i.e. a base model)."""
    if not getattr(tokenizer, "chat_template", None):
        return list(tokenizer(prompt, add_special_tokens=True).input_ids)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        tokenize=False,
        enable_thinking=False,  # Qwen3-style templates; ignored by the others
    )
    # The template already holds BOS etc.; adding special tokens again would double them.
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def cached_prompt_ids(cache: dict[str, list[int]], tokenizer: Any, prompt: str) -> list[int]:
    """`chat_prompt_ids`, computed once per distinct prompt into the backend's `cache`; a copy comes
    back (callers extend it). Prompts come from a fixed dataset and eval re-sends the same ones, so the
    chat template (Jinja) and the tokenizer run once per prompt, not once per step."""
    ids = cache.get(prompt)
    if ids is None:
        ids = cache[prompt] = chat_prompt_ids(tokenizer, prompt)
    return list(ids)


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """The EOS token plus the token the chat template writes right after an assistant message.

    Instruct models end a turn with a template token (`<|im_end|>`, `<|eot_id|>`) that is not always
    the tokenizer's EOS; a sampler that only stops at EOS would run on into a fabricated next turn.
    The template's own rendering of a finished assistant message says which token that is.
    """
    ids: set[int] = set()
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": PROBE}], tokenize=False
        )
        tail = text[text.rfind(PROBE) + len(PROBE) :].lstrip(" ")
        if tail:
            first = tokenizer(tail, add_special_tokens=False).input_ids[:1]
            if first and first[0] in set(getattr(tokenizer, "all_special_ids", ())):
                ids.add(first[0])
    return ids
