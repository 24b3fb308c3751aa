"""LangChain models for Vast.ai Serverless endpoints."""
