"""Stand-in for the part of transformers' tests/utils/test_configuration_utils.py that `ConfigTester` imports.

`config_common_kwargs` gives every attribute of the base `PreTrainedConfig` a value other than its default, so
`ConfigTester.check_config_arguments_init` can see that a config keeps them. Left out: the rest of that file (tests of
`PreTrainedConfig` itself, some of which need the Hub).
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
