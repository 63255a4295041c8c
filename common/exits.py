"""Process exit codes the entry points share with whoever supervises them."""

# sysexits.h's EX_CONFIG: the configuration is wrong (a rejected token, no models), so
# starting the process again cannot help; `demix up` stops instead of restarting it.
EXIT_CONFIG = 78
# A separation that could not be stopped holds the device: the supervisor must replace the
# worker process (EX_SOFTWARE).
EXIT_DEVICE_STUCK = 70
