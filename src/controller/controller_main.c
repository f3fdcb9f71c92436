#include <stdio.h>

#include "controller.h"

int controller_main(int argc, char **argv)
{
	fprintf(stderr, "nrbc controller: not implemented yet\n");
	return 1;
}
