"""Fit arithmetic on the public config.json values of real models, arithmetic written out."""

from __future__ import annotations

import pytest

from agent.errors import BadInput
from agent.models.fit import (
    GB,
    GIB,
    ModelShape,
    NoFit,
    UnsizedModel,
    parse_memory,
    plan,
    require_fit,
    valid_tp_sizes,
)

MISTRAL_7B_V03 = {  # mistralai/Mistral-7B-Instruct-v0.3
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "vocab_size": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
LLAMA_3_8B = {  # meta-llama/Meta-Llama-3-8B-Instruct
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
LLAMA_31_70B = {  # meta-llama/Llama-3.1-70B-Instruct
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
QWEN25_7B = {  # Qwen/Qwen2.5-7B-Instruct: GQA with 28 query heads over 4 KV heads
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
MIXTRAL_8X7B = {  # mistralai/Mixtral-8x7B-Instruct-v0.1: MoE, 8 experts per layer
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 32768,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
OVERHEAD = 2 * GIB  # 2,147,483,648


def test_llama3_8b_parameter_count_matches_the_published_8b():
    shape = ModelShape.from_config(LLAMA_3_8B)
    embeddings = 128256 * 4096 * 2  # embed_tokens + untied lm_head = 1,050,673,152
    attention = 4096 * 4096 + 2 * 4096 * (8 * 128) + 4096 * 4096  # q, k, v, o = 41,943,040
    mlp = 3 * 4096 * 14336  # gate, up, down = 176,160,768
    per_layer = attention + mlp + 2 * 4096  # + 2 norms = 218,112,000
    assert shape.params == embeddings + 32 * per_layer + 4096 == 8_030_261_248


def test_mistral_7b_parameter_count_matches_the_published_7_25b():
    shape = ModelShape.from_config(MISTRAL_7B_V03)
    assert shape.params == 32768 * 4096 * 2 + 32 * 218_112_000 + 4096 == 7_248_023_552


def test_llama3_8b_on_one_24gb_gpu_gets_tp1_and_its_full_context():
    result = require_fit(ModelShape.from_config(LLAMA_3_8B), [24 * GB], utilization=0.90)
    usable = int(24e9 * 0.90)  # 21,600,000,000
    weights = 8_030_261_248 * 2  # bf16: 16,060,522,496
    kv_budget = usable - weights - OVERHEAD  # 3,391,993,856 bytes
    per_token = 2 * 32 * 8 * 128 * 2  # K+V x layers x kv heads x head dim x 2 bytes = 131,072
    assert kv_budget // per_token == 25_878  # tokens of KV cache: more than the 8192 maximum
    assert (result.tensor_parallel_size, result.max_model_len) == (1, 8192)
    assert result.options[0].kv_tokens == 25_878


def test_mistral_7b_on_one_24gb_gpu_is_capped_by_kv_cache_not_by_its_32k_maximum():
    result = require_fit(ModelShape.from_config(MISTRAL_7B_V03), [24 * GB])
    weights = 7_248_023_552 * 2  # 14,496,047,104
    tokens = (21_600_000_000 - weights - OVERHEAD) // 131_072  # 37,814 tokens
    assert tokens == 37_814
    assert result.max_model_len == 32768  # the model maximum fits


def test_mistral_7b_on_a_16gb_gpu_is_refused():
    usable = int(16e9 * 0.9)  # 14,400,000,000 < 14,496,047,104 of weights alone
    with pytest.raises(NoFit, match=r"has 14.4 GB \(16.0 GB x 0.90\)"):
        require_fit(ModelShape.from_config(MISTRAL_7B_V03), [16 * GB])
    assert usable < 14_496_047_104


def test_70b_on_one_24gb_gpu_is_refused_with_the_numbers():
    with pytest.raises(NoFit) as caught:
        require_fit(ModelShape.from_config(LLAMA_31_70B), [24 * GB])
    # weights: 70,553,706,496 params x 2 bytes = 141.1 GB against 24 GB x 0.90 = 21.6 GB
    assert ModelShape.from_config(LLAMA_31_70B).params == 70_553_706_496
    message = str(caught.value)
    assert "141.1 GB" in message and "21.6 GB" in message and "24.0 GB x 0.90" in message
    assert "quantized" in caught.value.fix


def test_70b_on_eight_80gb_gpus_fits_with_tp8_and_its_128k_context():
    result = require_fit(ModelShape.from_config(LLAMA_31_70B), [80 * GB] * 8)
    per_gpu = -(-141_107_412_992 // 8)  # ceil: 17,638,426,624 bytes of weights per GPU
    budget = 72_000_000_000 - per_gpu - OVERHEAD  # 52,214,089,728
    per_token = 2 * 80 * 1 * 128 * 2  # 8 KV heads / tp 8 = 1 per GPU: 40,960 bytes
    assert budget // per_token == 1_274_758
    assert (result.tensor_parallel_size, result.max_model_len) == (8, 131072)


def test_gqa_model_with_28_heads_cannot_use_8_gpus_and_gets_tp4():
    shape = ModelShape.from_config(QWEN25_7B)
    assert valid_tp_sizes(shape, 8) == [1, 2, 4]  # 28 % 8 != 0
    assert shape.params == 152064 * 3584 * 2 + 28 * 233_053_184 + 3584 == 7_615_487_488
    result = require_fit(shape, [24 * GB] * 8)
    # tp 4: weights 15,230,974,976 / 4 = 3,807,743,744 per GPU; KV per token and GPU:
    # 2 x 28 layers x (4 / 4 = 1) head x 128 x 2 = 14,336 bytes
    assert result.options[-1].kv_bytes_per_token == 14_336
    assert (result.tensor_parallel_size, result.max_model_len) == (4, 32768)


def test_moe_model_holds_every_expert_in_memory():
    shape = ModelShape.from_config(MIXTRAL_8X7B)
    attention = 41_943_040
    experts = 8 * 3 * 4096 * 14336 + 4096 * 8  # 8 gated MLPs + router = 1,409,318,912
    assert shape.params == 32000 * 4096 * 2 + 32 * (attention + experts + 8192) + 4096
    assert shape.params == 46_702_792_704  # published: 46.7B
    with pytest.raises(NoFit, match="93.4 GB"):  # 46.7B x 2 bytes on 4 x 24 GB: 23.4 GB per GPU
        require_fit(shape, [24 * GB] * 4)
    result = require_fit(shape, [80 * GB] * 2)
    # tp 2: 72e9 - 46,702,792,704 - 2 GiB = 23,149,723,648 bytes; / 65,536 per token = 353,236
    assert result.options[-1].kv_tokens == 353_236
    assert (result.tensor_parallel_size, result.max_model_len) == (2, 32768)


def test_context_is_the_longest_that_fits_rounded_down():
    result = require_fit(ModelShape.from_config(MISTRAL_7B_V03), [20 * GB])
    tokens = (18_000_000_000 - 14_496_047_104 - OVERHEAD) // 131_072  # 10,349
    assert tokens == 10_349
    assert result.max_model_len == 10_240  # 40 x 256


def test_explicit_tensor_parallel_size_that_does_not_divide_heads_is_refused():
    result = plan(ModelShape.from_config(QWEN25_7B), [24 * GB] * 8, tensor_parallel_size=8)
    assert not result.fits and "28 attention heads" in result.reason


def test_explicit_context_longer_than_the_model_maximum_is_refused():
    result = plan(ModelShape.from_config(LLAMA_3_8B), [80 * GB], max_model_len=16384)
    assert not result.fits and "maximum 8192" in result.reason


def test_weight_bytes_from_files_win_over_the_estimate():
    awq = {**LLAMA_3_8B, "quantization_config": {"quant_method": "awq", "bits": 4}}
    shape = ModelShape.from_config(awq)
    assert shape.estimated_weight_bytes() < 6 * GB  # 4-bit linear layers, 16-bit embeddings
    result = plan(shape, [24 * GB], weight_bytes=5_730_000_000)
    assert result.weights_source == "files" and result.weights_bytes == 5_730_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("24GB", 24 * GB, id="GB"),
        pytest.param("40GiB", 40 * GIB, id="GiB"),
        pytest.param("80", 80 * GB, id="bare"),
        pytest.param("0.5TB", 500 * GB, id="TB"),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


def test_parse_memory_rejects_words():
    with pytest.raises(BadInput, match="--gpu-memory"):
        parse_memory("lots")


@pytest.mark.parametrize(
    ("quantization", "bits"),
    [
        pytest.param({"quant_method": "awq", "bits": 4, "group_size": 128}, 4, id="awq"),
        pytest.param({"quant_method": "gptq", "bits": 8}, 8, id="gptq-8bit"),
        pytest.param({"quant_method": "fp8", "activation_scheme": "dynamic"}, 8, id="fp8"),
        pytest.param(  # RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8
            {
                "quant_method": "compressed-tensors",
                "format": "float-quantized",
                "config_groups": {
                    "group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float"}}
                },
            },
            8,
            id="compressed-tensors-fp8",
        ),
        pytest.param(
            {
                "quant_method": "compressed-tensors",
                "format": "pack-quantized",
                "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}},
            },
            4,
            id="compressed-tensors-w4a16",
        ),
        pytest.param({"quant_method": "modelopt", "quant_algo": "FP8"}, 8, id="modelopt-fp8"),
        pytest.param({"quant_method": "modelopt", "quant_algo": "NVFP4"}, 4, id="modelopt-nvfp4"),
        pytest.param({"quant_method": "bitsandbytes", "load_in_4bit": True}, 4, id="bnb-4bit"),
    ],
)
def test_quantization_config_gives_the_bits_per_weight(quantization, bits):
    shape = ModelShape.from_config({**LLAMA_3_8B, "quantization_config": quantization})
    assert shape.weight_bits == bits and shape.quantization == quantization["quant_method"]


def test_fp8_weights_estimate_is_about_half_of_bf16():
    fp8 = {
        **LLAMA_3_8B,
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"g": {"weights": {"num_bits": 8}}},
        },
    }
    shape = ModelShape.from_config(fp8)
    linear = 32 * 218_112_000  # 6,979,584,000 parameters in the layers
    # 8 bits + 3 % for scales; embeddings and lm_head (1,050,677,248 with the final norm) in bf16
    assert shape.estimated_weight_bytes() == int(linear * 1.03) + 1_050_677_248 * 2


def test_multimodal_config_sizes_its_text_model_with_dtype_at_the_top():
    # transformers >= 4.56 writes `dtype`; a Llava-style config keeps it beside text_config
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "dtype": "float32",
        "text_config": {k: v for k, v in LLAMA_3_8B.items() if k != "torch_dtype"},
        "vision_config": {"hidden_size": 1024},
    }
    shape = ModelShape.from_config(config)
    assert (shape.layers, shape.kv_heads, shape.max_position_embeddings) == (32, 8, 8192)
    assert shape.float32_checkpoint
    # float32 files are served in 16-bit: 32 GB of files are 16 GB of weights
    assert plan(shape, [80 * GB], weight_bytes=32 * GB).weights_bytes == 16 * GB


def test_explicit_head_dim_wins_over_hidden_by_heads():
    qwen3_06b = {
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "num_hidden_layers": 28,
        "intermediate_size": 3072,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
    }  # Qwen/Qwen3-0.6B
    shape = ModelShape.from_config(qwen3_06b)
    assert shape.head_dim == 128  # not 1024 / 16 = 64
    assert shape.kv_bytes_per_token(1) == 2 * 28 * 8 * 128 * 2  # 114,688


def test_config_relying_on_transformers_defaults_says_it_cannot_be_sized():
    gemma3_text = {"hidden_size": 2560, "num_hidden_layers": 34, "model_type": "gemma3_text"}
    with pytest.raises(UnsizedModel) as caught:
        ModelShape.from_config({"text_config": gemma3_text})
    assert str(caught.value).startswith("config.json lacks 'num_attention_heads' needed to size")
    assert "pick a model whose config.json lists hidden_size" in caught.value.fix
