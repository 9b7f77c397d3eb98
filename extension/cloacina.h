/*
 * cloacina.h: declarations shared between the extension's C files.
 */
#ifndef CLOACINA_H
#define CLOACINA_H

/* wait.c: wake-ups for cloacina.wait() */
extern void cloacina_wait_shmem_request(void);
extern void cloacina_wait_shmem_startup(void);

#endif							/* CLOACINA_H */
