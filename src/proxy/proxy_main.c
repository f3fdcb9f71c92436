#include <stdio.h>

#include "proxy.h"

int proxy_main(int argc, char **argv)
{
	fprintf(stderr, "nrbc proxy: not implemented yet\n");
	return 1;
}
