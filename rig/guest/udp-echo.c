/* A UDP echo service for the Linux guest image: every datagram goes back to
 * its sender unchanged. Built static, so the image needs no libc for it. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 7;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("udp-echo");
		return 1;
	}
	for (;;) {
		char buf[65536];
		struct sockaddr_in from;
		socklen_t len = sizeof(from);
		ssize_t n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
		if (n >= 0)
			sendto(s, buf, n, 0, (struct sockaddr *)&from, len);
	}
}
