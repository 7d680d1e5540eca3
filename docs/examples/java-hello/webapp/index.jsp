<%@ page contentType="text/plain; charset=UTF-8" %>Hello from <%= System.getenv("SLIPWAY_INSTANCE") %> on Java <%= System.getProperty("java.runtime.version") %> (<%= application.getServerInfo() %>)
