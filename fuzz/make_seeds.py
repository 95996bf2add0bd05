#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/TARGET/ (small valid
inputs the fuzzers start from). Re-run after changing an input layout."""
import json
import os
import struct

import numpy as np
import gguf

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def u16(n):
    return struct.pack("<H", n)


# --- gguf_parse: a small GGUF v3 file with metadata of every kind and two tensors
path = "/tmp/main-fuzz-seed.gguf"
w = gguf.GGUFWriter(path, "llama")
w.add_uint32("a.u32", 7)
w.add_float32("a.f32", 0.5)
w.add_bool("a.bool", True)
w.add_string("a.str", "héllo")
w.add_array("a.arr", [1, 2, 3])
w.add_array("a.strs", ["x", "yz"])
w.add_tensor("t.f32", np.arange(8, dtype=np.float32).reshape(2, 4))
w.add_tensor("t.f16", np.arange(32, dtype=np.float16))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
put("gguf_parse", "small-v3", open(path, "rb").read())

# --- gguf_tokenizer: flags, pre, bos, eos, then token lines and the text
spm = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "▁b", "ab", "▁ab", "<0x41>", "Hello", "▁world"]
bpe = ["<|endoftext|>", "Ġ", "a", "b", "Ġa", "ab", "Ġab", "h", "e", "l", "o", "he", "ll", "hell", "hello"]
put("gguf_tokenizer", "spm", bytes([0x7E, 0, 1, 2]) + "\n".join(spm + ["Hello ab world"]).encode())
put("gguf_tokenizer", "bpe", bytes([0x37, 2, 0, 0]) + "\n".join(bpe + ["hello ab <|endoftext|>"]).encode())

# --- safetensors_load: config.json + a complete tiny LLaMA checkpoint
cfg = {
    "model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64, "rope_theta": 10000.0, "tie_word_embeddings": True,
}
shapes = {
    "model.embed_tokens.weight": [16, 8], "model.norm.weight": [8],
    "model.layers.0.input_layernorm.weight": [8], "model.layers.0.post_attention_layernorm.weight": [8],
    "model.layers.0.self_attn.q_proj.weight": [8, 8], "model.layers.0.self_attn.k_proj.weight": [4, 8],
    "model.layers.0.self_attn.v_proj.weight": [4, 8], "model.layers.0.self_attn.o_proj.weight": [8, 8],
    "model.layers.0.mlp.gate_proj.weight": [16, 8], "model.layers.0.mlp.up_proj.weight": [16, 8],
    "model.layers.0.mlp.down_proj.weight": [8, 16],
}
header, data, off = {}, b"", 0
for name, shape in sorted(shapes.items()):
    n = int(np.prod(shape)) * 2
    header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [off, off + n]}
    data += np.linspace(-1, 1, n // 2).astype(np.float16).tobytes()
    off += n
h = json.dumps(header).encode()
st = struct.pack("<Q", len(h)) + h + data
c = json.dumps(cfg).encode()
put("safetensors_load", "tiny-llama", u16(len(c)) + c + st)

# --- hf_tokenizer: tokenizer_config.json + a tiny byte-level BPE tokenizer.json + text
vocab = {t: i for i, t in enumerate(["<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "Ġ", "he", "ll", "hell", "hello", "Ġh"])}
tok = {
    "version": "1.0",
    "added_tokens": [
        {"id": 0, "content": "<|im_start|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
        {"id": 1, "content": "<|im_end|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    ],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": None,
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
              "vocab": vocab, "merges": ["h e", "l l", "he ll", "hell o", "Ġ h"]},
}
tc = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
      "chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"}
tcj = json.dumps(tc).encode()
put("hf_tokenizer", "bpe", u16(len(tcj)) + tcj + json.dumps(tok).encode() + b"\xff" + "hello <|im_end|> hé".encode())
put("hf_tokenizer", "bpe-no-config", u16(0) + json.dumps(tok).encode() + b"\xff" + b"hell hello")

# --- chat_template: real templates' shapes, then the user content
templates = {
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "mistral": "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}",
    "python-methods": "{%- set ns = namespace(n=0) %}{%- for m in messages %}{% set ns.n = ns.n + 1 %}{{ m.content.strip().upper() ~ (m | tojson) }}{% if loop.last %}{% break %}{% endif %}{% endfor %}{{ strftime_now('%d %b %Y') }}{{ ns.n }}",
}
for name, t in templates.items():
    put("chat_template", name, t.encode() + b"\xff" + "Hi there é".encode())

# --- jsonl_record: every input format
for name, line in {
    "alpaca": '{"instruction": "Add 2 and 3.", "input": "", "output": "5", "id": 1}',
    "prompt": '{"prompt": "Hi", "response": "Hello"}',
    "messages": '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
    "fields": '{"q": "Why?", "ctx": "Because.", "a": "So."}',
}.items():
    put("jsonl_record", name, line)

# --- c_abi: selector, then arguments
put("c_abi", "load", b"\x00model.gguf")
put("c_abi", "pair", b"\x01What is 2+2?\xff4.")
put("c_abi", "text", b"\x02The quick brown fox.")
print("seeds written under", root)
