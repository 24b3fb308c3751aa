"""A LlamaIndex LLM for Vast.ai Serverless endpoints."""
