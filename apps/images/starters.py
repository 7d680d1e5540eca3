"""Ready-made base images for real stacks: ops start a new image from one (Base images → New
image), publish it, and a developer deploys the matching example app from docs/runtimes.md.

Each is app-agnostic, as the platform wants: the runtime comes from Debian's packages, the app's
files come from its release directory (APP_VOLUME_MOUNT, /srv/app by default), and the process
runs as an unprivileged user."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Starter:
    key: str
    title: str
    name: str  # the image's repository name
    tag: str
    runtime: str
    description: str
    recipe: str
    port: int
    health_path: str  # what the example app answers on (docs/runtimes.md)

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


# Tomcat wants a base directory it can write (logs, work, unpacked WARs) and the release is
# read-only: the command makes one in the container's own /tmp from the package's
# configuration, and copies the release's WARs in; ROOT.war is served at /.
_TOMCAT_START = (
    "set -e; b=/tmp/catalina; mkdir -p $b/logs $b/temp $b/work $b/webapps; "
    "ln -sfn /etc/tomcat10 $b/conf; "
    "for w in /srv/app/*.war; do [ -e $w ] || { echo 'no .war file in /srv/app'; exit 1; }; cp $w $b/webapps/; done; "
    "exec /usr/share/tomcat10/bin/catalina.sh run"
)

JAVA = Starter(
    key="java",
    title="Java 17 with Tomcat 10",
    name="slipway/java-tomcat",
    tag="17",
    runtime="jvm",
    description="OpenJDK 17 (headless JRE) and Tomcat 10 from Debian; serves the WARs in the release (ROOT.war at /).",
    recipe=f"""# Java 17 and Tomcat 10 from Debian: serves every WAR in the app's release (ROOT.war at /).
FROM debian:bookworm
PACKAGES openjdk-17-jre-headless tomcat10
# Tomcat's package makes its user with systemd's sysusers and tmpfiles: the standalone tools do
# that without the whole of systemd, which a container never runs.
PACKAGES systemd-standalone-sysusers systemd-standalone-tmpfiles
# The JVM sizes its heap from the instance's memory limit; urandom keeps start-up quick.
ENV CATALINA_HOME=/usr/share/tomcat10 \\
    CATALINA_BASE=/tmp/catalina \\
    JAVA_OPTS="-XX:MaxRAMPercentage=70 -Djava.security.egd=file:/dev/./urandom"
USER tomcat
EXPOSE 8080
CMD ["/bin/sh", "-c", "{_TOMCAT_START}"]
LABEL org.opencontainers.image.title="Java 17 with Tomcat 10"
""",
    port=8080,
    health_path="/health",
)

NODE = Starter(
    key="node",
    title="Node.js",
    name="slipway/node",
    tag="18",
    runtime="node",
    description="Node.js 18 from Debian; runs server.js from the release (its node_modules come with it).",
    recipe="""# Node.js from Debian: runs server.js from the app's release, with its node_modules.
FROM debian:bookworm
PACKAGES nodejs ca-certificates
ENV NODE_ENV=production PORT=8080
WORKDIR /srv/app
USER nobody
EXPOSE 8080
CMD ["/usr/bin/node", "server.js"]
LABEL org.opencontainers.image.title="Node.js"
""",
    port=8080,
    health_path="/health",
)

PYTHON = Starter(
    key="python",
    title="Python 3 with gunicorn",
    name="slipway/python",
    tag="3.11",
    runtime="python",
    description="Python 3.11 from Debian with Flask, requests, PyYAML and psycopg2; gunicorn serves app:app from the release.",
    recipe="""# Python 3 from Debian with common libraries that need no build: gunicorn serves app:app
# from the app's release.
FROM debian:bookworm
PACKAGES python3 python3-gunicorn python3-flask python3-requests python3-yaml python3-psycopg2 ca-certificates
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8000
WORKDIR /srv/app
USER nobody
EXPOSE 8000
CMD ["/usr/bin/python3", "-m", "gunicorn", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "app:app"]
LABEL org.opencontainers.image.title="Python 3 with gunicorn"
""",
    port=8000,
    health_path="/health",
)

STARTERS = {starter.key: starter for starter in (JAVA, NODE, PYTHON)}
