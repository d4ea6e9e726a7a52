"""The model layer: what turns messages into text, and the text rules every layer above shares.

    models.py     load_model(ModelConfig): the packaged SmolLM2 GGUF dequantized once to WS/models
    base.py       the Generator protocol, GenerationStats, backend errors
    local.py      LocalGenerator: own decode loop, LoRA adapters switched per request
    remote.py     OpenAIGenerator: any OpenAI-compatible chat-completions server
    prompts.py    prompt text, injection filter, refusal, support and degenerate-answer rules
    citations.py  Citation, the numbered passage of a prompt

It sits above retrieve and below tune, serve and evals: tune trains on prompts built here and serve answers with
the generators built here, so neither reaches into the other for them. Nothing heavy is imported at package level.
"""
