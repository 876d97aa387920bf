// sendcost.c: the kernel's floor for one chat delivery on loopback TCP.
// (A copy of /work/shared/tools/sendcost.c, run by scripts/baselines/kernel-floor.sh.)
// A sender pinned to core 0 (or SENDER_CPU) writes MSG-byte frames to N connected sockets in turn
// (one write per delivery, or one writev of K frames per socket); a reader thread on core 1 (or
// READER_CPU) drains them.
// Prints sender CPU ns per delivered frame (getrusage of the sender thread).
// usage: sendcost N MSG K SECONDS [SENDER_CPU READER_CPU]   (CPUs default to 0 and 1)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
static int N, MSG, K, SCPU = 0, RCPU = 1; static double SECS; static int *rd; static volatile int done;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);if(pthread_setaffinity_np(pthread_self(),sizeof s,&s)){fprintf(stderr,"sendcost: cannot pin to cpu%d\n",c);exit(2);}}
static void *reader(void *a){(void)a;pin(RCPU);int ep=epoll_create1(0);char buf[1<<16];
 for(int i=0;i<N;i++){struct epoll_event e={.events=EPOLLIN,.data.fd=rd[i]};epoll_ctl(ep,EPOLL_CTL_ADD,rd[i],&e);}
 struct epoll_event ev[256];while(!done){int n=epoll_wait(ep,ev,256,100);for(int i=0;i<n;i++)while(read(ev[i].data.fd,buf,sizeof buf)==sizeof buf);}return 0;}
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c,char**v){N=atoi(v[1]);MSG=atoi(v[2]);K=atoi(v[3]);SECS=atof(v[4]);
 if(c>=7){SCPU=atoi(v[5]);RCPU=atoi(v[6]);}
 int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(0x7f000001)};
 bind(l,(void*)&a,sizeof a);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);listen(l,4096);
 int *wr=malloc(N*sizeof(int));rd=malloc(N*sizeof(int));int one=1;
 for(int i=0;i<N;i++){wr[i]=socket(AF_INET,SOCK_STREAM,0);connect(wr[i],(void*)&a,sizeof a);rd[i]=accept(l,0,0);
  setsockopt(wr[i],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);}
 pthread_t t;pthread_create(&t,0,reader,0);pin(SCPU);
 char *m=calloc(MSG,1);m[0]=0x81;m[1]=MSG-2;struct iovec iov[64];for(int j=0;j<K;j++){iov[j].iov_base=m;iov[j].iov_len=MSG;}
 struct rusage r0,r1;getrusage(RUSAGE_THREAD,&r0);double t0=now();long frames=0;
 while(now()-t0<SECS){for(int i=0;i<N;i++){ssize_t w=K==1?write(wr[i],m,MSG):writev(wr[i],iov,K);if(w>0)frames+=w/MSG;}}
 getrusage(RUSAGE_THREAD,&r1);done=1;pthread_join(t,0);
 double cpu=(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec)+(r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)+((r1.ru_utime.tv_usec-r0.ru_utime.tv_usec)+(r1.ru_stime.tv_usec-r0.ru_stime.tv_usec))/1e6;
 printf("N=%d msg=%dB frames/syscall=%d: %.0f ns sender CPU per delivered frame, %.0f frames/s\n",N,MSG,K,cpu*1e9/frames,frames/(now()-t0));return 0;}
