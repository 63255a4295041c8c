"""Process exit codes the entry points share with whoever supervises them."""

# sysexits.h's EX_CONFIG: the configuration is wrong (a rejected token, no models), so
# starting the process again cannot help; `demix up` stops instead of restarting it.
EXIT_CONFIG = 78
