/* nrbc controller: NixBuildRequest -> builder pod. */
#ifndef NRBC_CONTROLLER_H
#define NRBC_CONTROLLER_H

int controller_main(int argc, char **argv);

#endif
