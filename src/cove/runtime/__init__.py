"""Isolation runtimes. NamespaceRuntime (crun + C zygote) is the default backend."""
